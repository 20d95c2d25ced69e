"""``study show`` without a baseline result says so instead of silently dropping the comparison."""

from __future__ import annotations

import optuna
from typer.testing import CliRunner

import storage
from mtl_tune_cli.main import app
from storage.reports import BASELINE_ATTR, study_report
from tests.storage.helpers import JOB_DEFAULTS


def _study(url: str, *, baseline_completes: bool) -> None:
    study = optuna.create_study(study_name="s", storage=storage.optuna_storage(url))
    with storage.session_scope(url) as session:
        storage.create_job(session, study_name="s", **JOB_DEFAULTS)
    baseline = study.ask()
    baseline.set_user_attr(BASELINE_ATTR, True)
    baseline.set_user_attr("tasks", {"t": {"metric": 1.0}})
    if baseline_completes:
        study.tell(baseline, 1.0)
    else:
        study.tell(baseline, state=optuna.trial.TrialState.FAIL)
    tuned = study.ask()
    tuned.set_user_attr("tasks", {"t": {"metric": 0.5}})
    study.tell(tuned, 0.5)


def test_a_study_without_a_baseline_result_says_so(storage_url: str) -> None:
    _study(storage_url, baseline_completes=False)
    report = study_report(storage_url, "s")
    assert report.baseline_missing and report.comparison == {}
    out = CliRunner().invoke(app, ["study", "show", "s", "--storage", storage_url])
    assert out.exit_code == 0, out.output
    assert "no baseline result yet" in out.output


def test_a_study_with_its_baseline_compares_and_says_nothing_of_it(storage_url: str) -> None:
    _study(storage_url, baseline_completes=True)
    report = study_report(storage_url, "s")
    assert not report.baseline_missing and report.comparison["t"]["baseline"] == 1.0
    out = CliRunner().invoke(app, ["study", "show", "s", "--storage", storage_url])
    assert "no baseline result yet" not in out.output and "best vs baseline" in out.output
