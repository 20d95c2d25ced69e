"""A worker's epoch transactions are queued on its writer thread: a write error still fails the trial with its reason,
a stop request is still seen within a bounded number of epochs, and a worker interrupted mid-trial leaves every
epoch it trained written."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState

import storage
from storage import epochs
from tests.study.helpers import QUICK_SPACE, TINY
from tuner.study import StudySpec, Worker, WorkerSettings, create_study
from tuner.study import _trial as trial_module
from tuner.train import EpochReport, TaskEpoch, TrainResult

TASKS = ("a", "b")


def _train(n_epochs: int, during: Callable[[int], None] = lambda epoch: None) -> Callable[..., TrainResult]:
    """A stand-in for ``train`` that reports ``n_epochs`` epochs at once, calling ``during(epoch)`` before each."""

    def train(problem: object, config: Any, *, on_epoch_end: Callable | None = None, **_: object) -> TrainResult:
        result = TrainResult("uncertainty-toy", config, "cpu", dict.fromkeys(TASKS, 1.0))
        for epoch in range(n_epochs):
            during(epoch)
            report = EpochReport(epoch, {t: TaskEpoch(0.5, 0.5, 0.5, 1.0) for t in TASKS}, 1.0 / (epoch + 1))
            result.history.append(report)
            if on_epoch_end is not None:
                on_epoch_end(report)
        return result

    return train


@pytest.fixture
def slow_writer() -> Iterator[None]:
    """A writer far slower than the epochs (20 ms per transaction), so that several are queued at once."""
    real = epochs._write_batch

    def slow(url: str, batch: Sequence[Any]) -> Any:
        time.sleep(0.02)
        return real(url, batch)

    with mock.patch.object(epochs, "_write_batch", slow):
        yield


def _run(url: str, train: Callable[..., TrainResult], n_trials: int = 1, **settings: Any) -> list[Any]:
    spec = StudySpec(name="s", problem="uncertainty-toy", problem_options=TINY, n_trials=n_trials, epochs=20,
                     sampler="random", pruner="none", space=QUICK_SPACE, confirm_seeds=0)  # fmt: skip
    create_study(url, spec, source="cli")
    worker = Worker(WorkerSettings(url=url, study_name="s", exit_when_idle=True, poll_seconds=0.05, **settings))
    with mock.patch.object(trial_module, "train", train):
        worker.run()
    return optuna.load_study(study_name="s", storage=url).get_trials()


def _epochs(url: str, number: int) -> list[int]:
    with storage.session_scope(url) as session:
        job = storage.get_job(session, "s")
        return sorted({m.epoch for m in storage.trial_curves(session, job_id=job.id, trial_number=number)})


def _claim_states(url: str) -> dict[str, int]:
    with storage.session_scope(url) as session:
        return {state: n for state, n in storage.claim_counts(session, "s").items() if n}


def test_a_write_error_fails_the_trial_with_its_reason_and_the_worker_goes_on(backend_url: str) -> None:
    real = epochs._write_batch

    def broken(url: str, batch: Sequence[Any]) -> Any:
        if any(item.recorder.trial_number == 0 and item.epoch == 3 for item in batch):
            raise RuntimeError("disk full")
        return real(url, batch)

    with mock.patch.object(epochs, "_write_batch", broken):
        first, second = _run(backend_url, _train(20), n_trials=2, max_trials=2)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "RuntimeError: disk full"
    assert 3 not in _epochs(backend_url, 0)
    assert second.state == TrialState.COMPLETE and _epochs(backend_url, 1) == list(range(20))
    assert len(second.intermediate_values) == 20
    assert _claim_states(backend_url) == {"failed": 1, "complete": 1}


def test_a_stop_request_is_seen_within_the_queue_bound(backend_url: str, slow_writer: None) -> None:
    def stop_at_epoch_2(epoch: int) -> None:
        if epoch == 2:
            with storage.session_scope(backend_url) as session:
                storage.request_stop(session, "s")

    trial = _run(backend_url, _train(3 * epochs.MAX_QUEUED, stop_at_epoch_2))[0]  # the baseline, queued again
    assert trial.state == TrialState.FAIL and "asked to stop" in trial.user_attrs["fail_reason"]
    written = _epochs(backend_url, 0)
    assert 3 <= len(written) <= 3 + epochs.MAX_QUEUED and written == list(range(len(written)))
    assert sorted(trial.intermediate_values) == [e + 1 for e in written]  # every epoch trained was written
    assert _claim_states(backend_url) == {"interrupted": 1}
    with storage.session_scope(backend_url) as session:
        assert storage.get_job(session, "s").status == "stopped"


def test_an_interrupted_worker_leaves_every_trained_epoch_written(backend_url: str, slow_writer: None) -> None:
    def interrupt_after_epoch_6(epoch: int) -> None:
        if epoch == 7:
            raise KeyboardInterrupt("signal 2")

    with pytest.raises(KeyboardInterrupt):
        _run(backend_url, _train(20, interrupt_after_epoch_6))
    trial = optuna.load_study(study_name="s", storage=backend_url).get_trials()[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    assert _epochs(backend_url, 0) == list(range(7))
    assert sorted(trial.intermediate_values) == list(range(1, 8))
    assert _claim_states(backend_url) == {"interrupted": 1}
