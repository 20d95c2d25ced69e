"""A trial ended by a stop request or by its worker's interrupt (Ctrl-C, or SIGTERM, whose handler raises
``KeyboardInterrupt("signal 15")``) is recorded ``interrupted``, not failed, on SQLite and PostgreSQL: in its claim,
its summary, the API's counts and trial filter, and ``study show``'s states. A genuine failure is still failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState

import storage
from storage import epochs as epochs_module
from storage import queries
from storage.claims import INTERRUPTED_ATTR
from tests.api.helpers import client_for
from tests.storage.helpers import shown_states
from tests.study.helpers import QUICK_SPACE, TINY
from tuner.study import StudySpec, Worker, WorkerSettings, create_study
from tuner.study import _trial as trial_module
from tuner.study import _worker as worker_module

NAME = "s"


def _launch(url: str) -> None:
    spec = StudySpec(name=NAME, problem="uncertainty-toy", problem_options=TINY, n_trials=3, epochs=4,
                     sampler="random", pruner="none", space=QUICK_SPACE, confirm_seeds=0)  # fmt: skip
    create_study(url, spec, source="cli")


def _run(url: str) -> None:
    Worker(WorkerSettings(url=url, study_name=NAME, exit_when_idle=True, poll_seconds=0.05, device="cpu")).run()


def _at_trial_1_epoch_1(action: Callable[[], None]) -> Any:
    """``train`` as the worker calls it, with ``action`` run at the end of trial 1's second epoch, before the
    epoch is recorded (trial 0, the baseline, completes)."""
    real = trial_module.train
    calls: list[int] = []

    def train(*args: Any, on_epoch_end: Callable[[Any], None], **kwargs: Any) -> Any:
        calls.append(1)

        def epoch_end(report: Any) -> None:
            if len(calls) == 2 and report.epoch == 1:
                action()
            on_epoch_end(report)

        return real(*args, on_epoch_end=epoch_end, **kwargs)

    return mock.patch.object(trial_module, "train", train)


def _trial_1(url: str) -> optuna.trial.FrozenTrial:
    return optuna.load_study(study_name=NAME, storage=storage.optuna_storage(url)).get_trials()[1]


def _recorded(url: str) -> tuple[dict[str, int], str | None, str]:
    """Claim counts, trial 1's summary state and the job's status."""
    with storage.session_scope(url) as session:
        job = storage.get_job(session, NAME)
        summary = queries.summary(session, job_id=job.id, number=1)
        return storage.claim_counts(session, NAME), summary.state if summary else None, job.status


def test_a_study_stopped_mid_trial_shows_the_trial_interrupted(backend_url: str) -> None:
    _launch(backend_url)

    def stop() -> None:
        with storage.session_scope(backend_url) as session:
            storage.request_stop(session, NAME)

    # One failure in a row would fail the study: the interrupted trial is not one, and the study ends stopped. Each
    # epoch waits for its own transaction here, so the stop is read at the epoch it came in (a trial this short
    # could otherwise end before the queued transaction reading it commits: tests/study/test_queued_epochs.py).
    with (
        _at_trial_1_epoch_1(stop),
        mock.patch.object(worker_module, "MAX_CONSECUTIVE_FAILURES", 1),
        mock.patch.object(epochs_module, "MAX_QUEUED", 0),
    ):
        _run(backend_url)

    trial = _trial_1(backend_url)
    assert trial.state == TrialState.FAIL  # Optuna has no other state for it
    assert "asked to stop" in trial.user_attrs["fail_reason"] and trial.user_attrs[INTERRUPTED_ATTR] is True
    counts, summary_state, status = _recorded(backend_url)
    assert counts == {"running": 0, "complete": 1, "pruned": 0, "failed": 0, "interrupted": 1}
    assert summary_state == "interrupted"
    assert status == "stopped"
    assert shown_states(backend_url, NAME) == {"complete": 1, "interrupted": 1}

    with client_for(backend_url) as client:
        study = client.get(f"/api/studies/{NAME}").json()
        assert study["trials"] == {"complete": 1, "pruned": 0, "failed": 0, "running": 0, "interrupted": 1}
        listed = {s["name"]: s for s in client.get("/api/studies").json()["studies"]}
        assert listed[NAME]["trials"]["interrupted"] == 1 and listed[NAME]["trials"]["failed"] == 0
        failed = client.get(f"/api/studies/{NAME}/trials", params={"state": "failed"}).json()
        assert failed["total"] == 0 and failed["items"] == []
        interrupted = client.get(f"/api/studies/{NAME}/trials", params={"state": "interrupted"}).json()
        assert interrupted["total"] == 1 and [t["number"] for t in interrupted["items"]] == [1]
        assert interrupted["items"][0]["state"] == "interrupted"

    with storage.session_scope(backend_url) as session:  # resumed, the study fills the freed slot
        storage.resume(session, NAME)
    _run(backend_url)
    counts, _, status = _recorded(backend_url)
    assert (counts["complete"], counts["interrupted"], counts["failed"], status) == (3, 1, 0, "completed")


def test_a_worker_interrupted_mid_trial_leaves_it_interrupted(backend_url: str) -> None:
    _launch(backend_url)

    def interrupt() -> None:
        raise KeyboardInterrupt("signal 15")  # what the worker's SIGTERM handler raises

    with _at_trial_1_epoch_1(interrupt), pytest.raises(KeyboardInterrupt):
        _run(backend_url)

    trial = _trial_1(backend_url)
    assert trial.state == TrialState.FAIL
    assert "signal 15" in trial.user_attrs["fail_reason"] and trial.user_attrs[INTERRUPTED_ATTR] is True
    counts, summary_state, _ = _recorded(backend_url)
    assert counts == {"running": 0, "complete": 1, "pruned": 0, "failed": 0, "interrupted": 1}
    assert summary_state == "interrupted"
    assert shown_states(backend_url, NAME) == {"complete": 1, "interrupted": 1}


def test_an_exception_in_training_still_counts_as_failed(backend_url: str) -> None:
    _launch(backend_url)

    def boom() -> None:
        raise RuntimeError("diverged")

    with _at_trial_1_epoch_1(boom):
        _run(backend_url)

    trial = _trial_1(backend_url)
    assert trial.state == TrialState.FAIL and INTERRUPTED_ATTR not in trial.user_attrs
    assert "RuntimeError: diverged" in trial.user_attrs["fail_reason"]
    counts, summary_state, status = _recorded(backend_url)
    assert counts == {"running": 0, "complete": 3, "pruned": 0, "failed": 1, "interrupted": 0}
    assert summary_state == "failed"
    assert status == "completed"
    assert shown_states(backend_url, NAME) == {"complete": 3, "failed": 1}
    with client_for(backend_url) as client:
        assert client.get(f"/api/studies/{NAME}").json()["trials"]["failed"] == 1
        failed = client.get(f"/api/studies/{NAME}/trials", params={"state": "failed"}).json()
        assert [t["number"] for t in failed["items"]] == [1]
