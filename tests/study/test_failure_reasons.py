"""Every failed trial records why it failed, and a study failed for its trials' failures quotes that reason: never
"unknown error", whatever ended the trial (an exception with no message, an interrupt, a failure before training)."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState

import storage
from tests.study.helpers import QUICK_SPACE
from tuner.problems import PLUGINS_ENV
from tuner.study import StudySpec, Worker, WorkerSettings, create_study
from tuner.study import _trial as trial_module

PLUGIN = "mtl_tune_failing_plugin"
# Problems that fail in the worker only, where the model is built: one with an exception that says nothing, one
# interrupted as SIGTERM interrupts a worker (its handler raises ``KeyboardInterrupt("signal 15")``).
SOURCE = """
    from tuner.problems import UncertaintyToy


    class Mute(UncertaintyToy):
        name = "plugin-mute"

        def build_model(self, knobs, chain):
            raise AssertionError()


    class Interrupted(UncertaintyToy):
        name = "plugin-interrupted"

        def build_model(self, knobs, chain):
            raise KeyboardInterrupt("signal 15")
"""


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / f"{PLUGIN}.py").write_text(textwrap.dedent(SOURCE))
    importlib.invalidate_caches()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(PLUGINS_ENV, PLUGIN)
    yield f"sqlite:///{tmp_path / 'reasons.db'}"
    storage.dispose_engines()


def _launch(url: str, problem: str = "uncertainty-toy", n_trials: int = 1) -> None:
    spec = StudySpec(name="s", problem=problem, problem_options={"n_train": 64, "n_val": 32}, n_trials=n_trials,
                     epochs=1, sampler="random", space=QUICK_SPACE)  # fmt: skip
    create_study(url, spec, source="cli")


def _run(url: str, **settings: Any) -> None:
    Worker(
        WorkerSettings(url=url, study_name="s", exit_when_idle=True, poll_seconds=0.05, device="cpu", **settings)
    ).run()


def _failed(url: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    return [t for t in trials if t.state == TrialState.FAIL]


def _last_error(url: str) -> str | None:
    with storage.session_scope(url) as session:
        return storage.get_job(session, "s").last_error


def test_an_exception_without_a_message_is_named(url: str) -> None:
    _launch(url, problem="plugin-mute")
    _run(url)
    failed = _failed(url)
    assert failed and all("AssertionError" in t.user_attrs.get("fail_reason", "") for t in failed)
    with storage.session_scope(url) as session:  # a genuine failure is counted failed
        counts = storage.claim_counts(session, "s")
    assert counts["failed"] == len(failed) and counts["interrupted"] == 0
    last_error = _last_error(url)
    assert last_error is not None and "unknown error" not in last_error and "AssertionError" in last_error


def test_an_interrupted_trial_says_it_was_interrupted(url: str) -> None:
    _launch(url, problem="plugin-interrupted")
    with pytest.raises(KeyboardInterrupt):
        _run(url)
    [failed] = _failed(url)
    assert "signal 15" in failed.user_attrs.get("fail_reason", ""), failed.user_attrs
    with storage.session_scope(url) as session:  # an interrupt is not the trial's failure
        counts = storage.claim_counts(session, "s")
    assert counts["interrupted"] == 1 and counts["failed"] == 0


def test_a_failure_before_training_is_recorded_with_its_reason(url: str) -> None:
    """Choosing the configuration reads the database (a parameter's first distribution): a dropped connection
    there fails the trial as surely as one during training."""
    _launch(url, n_trials=2)
    real = trial_module.suggest_config
    calls: list[int] = []

    def once_dropped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the connection to the database was dropped")
        return real(*args, **kwargs)

    with mock.patch.object(trial_module, "suggest_config", once_dropped):
        _run(url)
    [failed] = _failed(url)
    assert "the connection to the database was dropped" in failed.user_attrs.get("fail_reason", ""), failed.user_attrs


def test_a_study_failed_for_failures_before_training_quotes_their_reason(url: str) -> None:
    _launch(url)

    def dropped(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the connection to the database was dropped")

    with mock.patch.object(trial_module, "suggest_config", dropped):
        _run(url)
    last_error = _last_error(url)
    assert last_error is not None and "the connection to the database was dropped" in last_error, last_error


def test_a_study_failed_for_trials_lost_to_other_workers_says_so(url: str) -> None:
    """Each trial is failed by another worker while it trains (as one that took this worker for dead does): the
    study fails after its failures in a row, and says why."""
    _launch(url)
    real = trial_module.train

    def failed_elsewhere(*args: Any, **kwargs: Any) -> Any:
        rdb = optuna.storages.RDBStorage(url)
        [running] = optuna.load_study(study_name="s", storage=rdb).get_trials(states=(TrialState.RUNNING,))
        study_id = rdb.get_study_id_from_name("s")
        rdb.set_trial_state_values(
            rdb.get_trial_id_from_study_id_trial_number(study_id, running.number), TrialState.FAIL
        )
        return real(*args, **kwargs)

    with mock.patch.object(trial_module, "train", failed_elsewhere):
        _run(url)
    last_error = _last_error(url)
    assert last_error is not None and "unknown error" not in last_error, last_error
