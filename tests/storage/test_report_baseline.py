"""``study show`` without a baseline result says so instead of silently dropping the comparison."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

import storage
from api.views import study_detail
from mtl_tune_cli.main import app
from storage import BASELINE_ATTR
from tests.storage.helpers import JOB_DEFAULTS


def _study(url: str, *, baseline_completes: bool) -> None:
    """Trial 0 (the baseline) complete or failed, then trial 1 complete, as a worker records them: Optuna's trials
    and mtl-tune's summaries."""
    study = optuna.create_study(study_name="s", storage=storage.optuna_storage(url))
    with storage.session_scope(url) as session:
        job_id = storage.create_job(session, study_name="s", **JOB_DEFAULTS).id
    baseline = study.ask()
    baseline.set_user_attr(BASELINE_ATTR, True)
    study.tell(baseline, 1.0 if baseline_completes else None, state=None if baseline_completes else TrialState.FAIL)
    study.tell(study.ask(), 0.5)
    with storage.session_scope(url) as session:
        for number, state, value in ((0, "complete" if baseline_completes else "failed", 1.0), (1, "complete", 0.5)):
            values = [value] if state == "complete" else None
            storage.write_summary(
                session, job_id=job_id, trial_number=number, state=state, values=values, params={},
                task_metrics={"t": {"metric": value}}, duration_s=1.0, started_at=None, finished_at=None,
            )  # fmt: skip


def _show(url: str) -> str:
    out = CliRunner().invoke(app, ["study", "show", "s", "--storage", url])
    assert out.exit_code == 0, out.output
    return out.output


def test_a_study_without_a_baseline_result_says_so(storage_url: str) -> None:
    _study(storage_url, baseline_completes=False)
    with storage.session_scope(storage_url) as session:
        shown = study_detail(session, storage.get_job(session, "s"))
    assert shown.baseline is None and shown.comparison == {} and [row.number for row in shown.best] == [1]
    output = _show(storage_url)
    assert "no baseline result yet" in output and "best vs baseline" not in output


def test_a_study_with_its_baseline_compares_and_says_nothing_of_it(storage_url: str) -> None:
    _study(storage_url, baseline_completes=True)
    with storage.session_scope(storage_url) as session:
        shown = study_detail(session, storage.get_job(session, "s"))
    assert shown.baseline is not None and shown.comparison["t"].baseline == 1.0
    output = _show(storage_url)
    assert "no baseline result yet" not in output and "best vs baseline" in output
