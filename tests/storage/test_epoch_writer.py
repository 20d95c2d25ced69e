"""A running trial's start and epochs go through the process's ``EpochWriter``: queued, several per transaction,
and always written before the trial's final state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import select

import storage
from storage import epochs
from storage._optuna_tables import Writes
from tests.storage.helpers import held_trial, outside_trial, trial_id

ROWS = [{"task": "a", "train_loss": 0.5, "val_loss": 0.4, "metric": 0.3, "weight": 1}]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def batches() -> Iterator[list[int]]:
    """A writer slower than the epochs (20 ms per transaction); yields the size of every batch it wrote."""
    sizes: list[int] = []
    real = epochs._write_batch

    def slow(url: str, batch: Sequence[Any]) -> Any:
        time.sleep(0.02)
        sizes.append(len(batch))
        return real(url, batch)

    with mock.patch.object(epochs, "_write_batch", slow):
        yield sizes


def _summary_states(session: Any, job_id: int) -> list[str]:
    return list(session.scalars(select(storage.TrialSummary.state).where(storage.TrialSummary.job_id == job_id)))


def test_queued_epochs_share_transactions_and_all_come_before_the_final_state(
    storage_url: str, make_job: Callable, batches: list[int]
) -> None:
    job, claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    for epoch in range(12):
        trial.report(1.0 / (epoch + 1), epoch + 1)
        recorder.epoch(epoch, [ROWS[0] | {"metric": float(epoch)}])
    assert recorder.queued <= epochs.MAX_QUEUED  # the training thread never ran further ahead
    study.tell(trial, 0.1)  # waits for the queue, then the final state, the claim and the summary
    assert recorder.finished and recorder.queued == 0
    assert sum(batches) == 13 and len(batches) < 13  # the start and 12 epochs, several per transaction
    outside = outside_trial(storage_url)
    assert outside.state == TrialState.COMPLETE and outside.params == {"layers": trial.params["layers"]}
    assert outside.intermediate_values == {e + 1: 1.0 / (e + 1) for e in range(12)}
    with storage.session_scope(storage_url) as session:
        curves = storage.trial_curves(session, job_id=job.id, trial_number=0)
        assert [(m.epoch, m.metric) for m in curves] == [(e, float(e)) for e in range(12)]
        row = session.get(storage.TrialClaim, claim)
        assert (row.state, row.trial_number) == ("complete", 0)
        assert _summary_states(session, job.id) == ["complete"]


def test_a_failed_transaction_raises_at_the_next_epoch_and_its_writes_go_with_the_final_state(
    storage_url: str, make_job: Callable
) -> None:
    job, _claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    recorder.flush()
    real = epochs._write_batch

    def broken(url: str, batch: Sequence[Any]) -> Any:
        if any(item.epoch == 1 for item in batch):
            raise RuntimeError("disk full")
        return real(url, batch)

    with mock.patch.object(epochs, "_write_batch", broken):
        trial.report(0.9, 1)
        recorder.epoch(0, ROWS)
        recorder.flush()
        trial.report(0.8, 2)
        recorder.epoch(1, ROWS)
        with pytest.raises(RuntimeError, match="disk full"):
            recorder.flush()
    recorder.flush()  # raised once: the trial's owner fails it
    trial.set_user_attr("fail_reason", "RuntimeError: disk full")
    study.tell(trial, state=TrialState.FAIL)
    outside = outside_trial(storage_url)
    assert outside.state == TrialState.FAIL and outside.intermediate_values == {1: 0.9, 2: 0.8}
    with storage.session_scope(storage_url) as session:
        assert [m.epoch for m in storage.trial_curves(session, job_id=job.id, trial_number=0)] == [0]
        assert _summary_states(session, job.id) == ["failed"]


def test_a_stop_request_is_seen_within_the_queue_bound(
    storage_url: str, make_job: Callable, batches: list[int]
) -> None:
    _job, _claim, _study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    recorder.flush()
    with storage.session_scope(storage_url) as session:
        storage.request_stop(session, "s")
    late = 0
    for epoch in range(1, 3 * epochs.MAX_QUEUED):  # epochs far faster than the writer
        outcome = recorder.epoch(epoch, ROWS)
        assert outcome is not None
        if outcome.job_status == "stopping":
            break
        late += 1
    assert 0 < late <= epochs.MAX_QUEUED
    recorder.drain()
    storage.worker_storage(storage_url).release(trial_id(storage_url, trial))


def test_an_idle_writer_thread_ends_and_the_next_epoch_starts_another(storage_url: str, make_job: Callable) -> None:
    _job, _claim, study, trial, recorder = held_trial(storage_url, make_job)
    with mock.patch.object(epochs, "IDLE_EXIT_S", 0.05):
        recorder.start()
        recorder.flush()
        time.sleep(0.3)
        assert recorder.writer._thread is None
        recorder.epoch(0, ROWS)
        recorder.flush()
    assert recorder.outcome is not None and recorder.outcome.trial_running
    study.tell(trial, 0.5)
    assert outside_trial(storage_url).state == TrialState.COMPLETE


def test_a_write_error_a_trial_ending_otherwise_never_raised_is_logged(
    storage_url: str, make_job: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    _job, _claim, _study, _trial, recorder = held_trial(storage_url, make_job)
    with mock.patch.object(epochs, "_write_batch", mock.Mock(side_effect=RuntimeError("disk full"))):
        recorder.start()
        with caplog.at_level("WARNING", logger="mtl_tune.worker"):
            recorder.drain()
    assert "disk full" in caplog.text


def test_no_wait_outlasts_what_it_waits_for(storage_url: str, make_job: Callable) -> None:
    """A count an interrupt left without its queued transaction, a thread that cannot start and a thread that died
    writing: each wait still returns, the last with a reason."""
    _job, _claim, _study, _trial, recorder = held_trial(storage_url, make_job)
    writer = recorder.writer
    with mock.patch.object(epochs, "WAIT_CHECK_S", 0.05):
        recorder.queued += 1  # counted, never queued
        started = time.monotonic()
        recorder.drain()
        assert recorder.queued == 0 and time.monotonic() - started < 5

        writer._thread = None
        with (
            mock.patch.object(epochs.threading.Thread, "start", side_effect=RuntimeError("can't start new thread")),
            pytest.raises(RuntimeError, match="start new thread"),
        ):
            recorder.start()
        assert recorder.queued == 0
        recorder.flush()

        finished = epochs.threading.Thread(target=lambda: None)
        finished.start()
        finished.join()
        with writer._lock:  # a thread that died while writing one of the trial's transactions
            writer._writing = [epochs._Queued(recorder, 0, ROWS, Writes())]
            recorder.queued += 1
            writer._thread = finished
        with pytest.raises(RuntimeError, match="writer thread died"):
            recorder.flush()
    assert recorder.queued == 0
