"""A running trial's writes: its start, one transaction per epoch (mtl-tune's metric rows and Optuna's writes
together, with a read of the job's status and the trial's state), then its final state with the claim and the
summary.

The start and the epochs go to the process's ``EpochWriter`` for the database: one thread that commits whatever
is queued in one transaction (group commit), so training never waits for a commit; the final state waits for them.
Kept apart from ``storage/__init__`` because it needs Optuna's tables (and importing Optuna takes a while).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from storage._engine import normalize_url, read_connection, write_transaction
from storage._optuna_tables import TRIALS, LostTrial, Writes, finish_trial, lost_trials, same_trial, utc_naive, write
from storage._worker_storage import WorkerStorage
from storage.claims import INTERRUPTED, INTERRUPTED_ATTR, attach_trial, finish_claim
from storage.metrics import epoch_records, insert_epochs, write_summary
from storage.models import StudyJob

log = logging.getLogger("mtl_tune.worker")

#: How many of a trial's transactions may wait in the queue when its next epoch ends. Epochs longer than a commit
#: (a few ms) find the previous epoch's committed, so a stop request (or the trial failed by another worker) is
#: seen one epoch late; shorter ones queue up, and it is seen at most this many epochs (tens of ms) late.
MAX_QUEUED = 32
#: A writer thread with nothing to do for this long ends; the next submission starts another.
IDLE_EXIT_S = 5.0
#: How often a wait for the writer checks that what it waits for can still come.
WAIT_CHECK_S = 1.0


@dataclass(frozen=True)
class EpochOutcome:
    job_status: str | None  # None when the job was deleted
    trial_running: bool  # False when Optuna's trial was finished elsewhere (failed as stale by another worker)


# The claim state a finished trial leaves its slot in, by Optuna state (see ``claim_state`` for FAIL).
CLAIM_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def claim_state(trial: FrozenTrial | None) -> str:
    """The claim (and summary) state of a finished trial: its Optuna state, except that a FAIL trial its worker
    marked interrupted (an interrupt or a stop request ended it) is ``interrupted``; a trial lost to another
    worker (None) is failed."""
    if trial is None:
        return "failed"
    if trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED_ATTR):
        return INTERRUPTED
    return CLAIM_STATE.get(trial.state, "failed")


class TrialRecorder:
    """The writes of one trial a worker runs and holds in ``rdb``: ``start``, ``epoch`` per epoch, then ``finish``
    (``rdb`` calls it with the trial's final state, see ``WorkerStorage.hold``).

    ``start`` and ``epoch`` queue their transaction on the process's ``EpochWriter`` and return at once; ``epoch``
    waits only while more than ``MAX_QUEUED`` of the trial's are queued. So the stop check an epoch returns is the
    latest committed transaction's: a stop request is seen one epoch late, at most ``MAX_QUEUED``. A
    transaction that fails raises its error at the trial's next ``epoch`` or ``flush`` (the trial fails with it)
    and its Optuna writes go with the final state, which ``finish`` writes once every queued transaction is done.

    ``lost`` (the trial was finished elsewhere: failed as lost by another worker) and ``finished`` (its final state,
    claim and summary written together) are this recorder's own: it is the trial's one owner in the database.

    Every transaction first checks that the job and the trial are still the ones it started with (the job's id and
    creation time, the trial's id, number and start): a study deleted and created again while the trial runs may
    get the same ids (SQLite hands a deleted row's id out again), and nothing of this trial may reach it.
    """

    def __init__(
        self,
        url: str,
        rdb: WorkerStorage,
        *,
        job_id: int,
        job_created_at: datetime,
        claim_id: int,
        trial_id: int,
        trial_number: int,
    ) -> None:
        self.url, self.rdb = url, rdb
        self.job_id, self.claim_id, self.trial_id, self.trial_number = job_id, claim_id, trial_id, trial_number
        start = rdb.get_trial(trial_id).datetime_start
        assert start is not None  # a running trial has started
        self.identity = {
            "job_id": job_id, "created_at": job_created_at, "trial_id": trial_id, "number": trial_number,
            "start": utc_naive(start),
        }  # fmt: skip
        self.lost = self.finished = False
        self.outcome: EpochOutcome | None = None  # what the latest committed transaction read
        self.writer = epoch_writer(normalize_url(url))
        # Guarded by the writer's lock: transactions queued, a write error not raised yet, Optuna writes of
        # transactions that failed (they go with the final state).
        self.queued, self.unwritten = 0, Writes()
        self.error: BaseException | None = None

    def start(self) -> None:
        """Before training: the claim's trial number (from then on, a worker that dies leaves a lost trial that
        other workers fail and retry) and the trial's parameters and attributes so far."""
        self.writer.submit(_Queued(self, None, (), self.rdb.take(self.trial_id)))

    def epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> EpochOutcome | None:
        """Every task's metric row and the trial's pending Optuna writes (its intermediate value, the pruner's
        bookkeeping), queued; the outcome of the latest committed transaction, None before the first."""
        self.writer.submit(_Queued(self, epoch, rows, self.rdb.take(self.trial_id)))
        self.flush(MAX_QUEUED)
        return self.outcome

    def flush(self, queued: int = 0) -> None:
        """Wait until at most ``queued`` of the trial's transactions are queued; raise a write error of the trial
        not raised yet."""
        if (error := self.writer.wait(self, queued)) is not None:
            raise error

    def drain(self) -> None:
        """Wait for every queued transaction of the trial, whatever became of them; a write error not raised yet
        is logged (the trial is ending for another reason)."""
        if (error := self.writer.wait(self, 0)) is not None:
            log.warning("trial %d: an epoch's transaction failed: %s", self.trial_number, error)

    def finish(self, writes: Writes, trial: FrozenTrial) -> bool:
        """``WorkerStorage``'s finisher: once every queued transaction of the trial is done, its final state and
        values, its pending writes, the claim closed and the trial's summary, in one transaction; False (nothing
        written) if it was not running."""
        self.drain()
        with write_transaction(self.url) as connection:
            written = finish_trial(connection, self.trial_id, trial, self.unwritten | writes)
            # The job is still its own (``finish_claim`` then locks its row for the counts).
            if written and connection.execute(_JOB, self.identity).first() is not None:
                record_finished(connection, job_id=self.job_id, claim_id=self.claim_id, trial=trial)
        self.lost = self.lost or not written
        self.finished = written
        return written


@dataclass(frozen=True)
class _Queued:
    recorder: TrialRecorder
    epoch: int | None  # None: the trial's start
    rows: Sequence[Mapping[str, Any]]
    writes: Writes


class EpochWriter:
    """Running trials' starts and epochs for one database, written by one thread of this process: whatever is
    queued when it gets to it goes out in one transaction (group commit)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Condition()
        self._queue: list[_Queued] = []
        self._writing: list[_Queued] = []  # the batch the thread is writing
        self._thread: threading.Thread | None = None

    def submit(self, item: _Queued) -> None:
        with self._lock:
            self._ensure_thread()  # first: a thread that cannot start leaves nothing counted
            item.recorder.queued += 1
            self._queue.append(item)
            self._lock.notify_all()

    def wait(self, recorder: TrialRecorder, queued: int) -> BaseException | None:
        """Wait until at most ``queued`` of the recorder's transactions are queued; its write error not taken yet.

        Every ``WAIT_CHECK_S`` the count is checked against what is really queued or being written (an interrupt
        between counting and queueing leaves one that will never come down) and a thread that died with work
        queued is replaced, so that no wait lasts forever."""
        with self._lock:
            while not self._lock.wait_for(lambda: recorder.queued <= queued, timeout=WAIT_CHECK_S):
                if self._writing and not (self._thread is not None and self._thread.is_alive()):
                    for item in self._writing:  # the thread died writing them: they fail, with a reason
                        item.recorder.queued -= 1
                        item.recorder.error = item.recorder.error or RuntimeError("the epoch writer thread died")
                    self._writing = []
                pending = sum(item.recorder is recorder for item in (*self._queue, *self._writing))
                recorder.queued = min(recorder.queued, pending)
                if self._queue:
                    self._ensure_thread()
            error, recorder.error = recorder.error, None
        return error

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():  # not started, idle, died, or the parent's (a fork)
            # Known before it starts: an interrupt during ``start`` cannot leave a running thread untracked.
            self._thread = threading.Thread(target=self._run, name="mtl-tune-epoch-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._lock.wait_for(lambda: self._queue, timeout=IDLE_EXIT_S):
                    self._thread = None
                    return
                batch, self._queue = self._queue, []
                self._writing = batch
            error: BaseException | None = None
            try:
                outcomes = _write_batch(self.url, batch)
            except BaseException as exc:  # the trials' owners raise it; this thread goes on
                outcomes, error = {}, exc
            with self._lock:
                self._writing = []
                for item in batch:
                    recorder = item.recorder
                    recorder.queued -= 1
                    if error is not None:
                        recorder.error = recorder.error or error
                        recorder.unwritten = recorder.unwritten | item.writes
                for recorder, outcome in outcomes.items():
                    recorder.outcome = outcome
                    recorder.lost = recorder.lost or not outcome.trial_running
                self._lock.notify_all()


@functools.cache
def epoch_writer(url: str) -> EpochWriter:
    """The process's writer for a normalized URL."""
    return EpochWriter(url)


def _write_batch(url: str, batch: Sequence[_Queued]) -> dict[TrialRecorder, EpochOutcome]:
    """Queued starts and epochs in one transaction: per trial one read of its job's status and its state (each
    None when it is no longer the one it started with), then the metric rows of the trials whose job is theirs, the
    claim's trial number when a trial starts, and the Optuna writes of the trials still running (a trial finished
    elsewhere gets none). Rows that reference the job come before the claim's update, the order a job's deletion
    (the job, then its claims) takes its locks in."""
    pending: dict[TrialRecorder, Writes] = {}
    for item in batch:
        pending[item.recorder] = pending.get(item.recorder, Writes()) | item.writes
    started = {item.recorder for item in batch if item.epoch is None}
    with write_transaction(url) as connection:  # BEGIN IMMEDIATE: the write lock first, then the reads
        outcomes = {}
        for r in pending:
            status, state = connection.execute(_CHECK, r.identity).one()
            outcomes[r] = EpochOutcome(status, state == TrialState.RUNNING)
        ours = {r for r, outcome in outcomes.items() if outcome.job_status is not None}
        records = [
            record
            for item in batch
            if item.epoch is not None and item.recorder in ours
            for record in epoch_records(
                job_id=item.recorder.job_id, trial_number=item.recorder.trial_number, epoch=item.epoch, rows=item.rows
            )
        ]
        insert_epochs(connection, records)  # every queued epoch's rows in one INSERT
        for r, writes in pending.items():
            if r in ours and r in started:
                attach_trial(connection, r.claim_id, r.trial_number)
            if outcomes[r].trial_running:
                write(connection, r.trial_id, writes)
    return outcomes


# The job's status and the trial's state, each only while it is the one a recorder started with. The job's row is
# locked as the metric rows' foreign key would lock it (PostgreSQL): a deletion waits for this transaction, or this
# one sees the job gone, so its rows are never inserted after the job was deleted.
_JOB = select(StudyJob.status).where(StudyJob.id == bindparam("job_id"), StudyJob.created_at == bindparam("created_at"))
_CHECK = select(
    _JOB.with_for_update(read=True, key_share=True).scalar_subquery(),
    select(TRIALS.c.state)
    .where(same_trial(bindparam("trial_id"), bindparam("number"), bindparam("start")))
    .scalar_subquery(),
)


def record_finished(db: Session | Connection, *, job_id: int, claim_id: int, trial: FrozenTrial) -> None:
    """A finished trial's claim closed and its summary written, in the caller's transaction; nothing when the
    claim was deleted with its study."""
    state = claim_state(trial)
    if finish_claim(db, claim_id, state=state, missing_ok=True):  # not when the study was deleted meanwhile
        write_summary(db, job_id=job_id, state=state, **_summary_fields(trial))


def record_lost(db: Session | Connection, *, job_id: int, trial: FrozenTrial) -> None:
    """The summary of a trial failed because its worker was lost (its claim stays lost, as the reaper left it)."""
    write_summary(db, job_id=job_id, state="failed", **_summary_fields(trial))


def _summary_fields(trial: FrozenTrial) -> dict[str, Any]:
    """Optuna hands out naive local times; the summaries store aware UTC ones."""
    start, complete = trial.datetime_start, trial.datetime_complete
    return {
        "trial_number": trial.number,
        "values": trial.values,
        "params": trial.params,
        "task_metrics": trial.user_attrs.get("tasks"),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        "started_at": start.astimezone(UTC) if start else None,
        "finished_at": complete.astimezone(UTC) if complete else None,
    }


def find_lost_trials(url: str) -> list[LostTrial]:
    """Trials running in Optuna whose worker was lost (their claim reaped) and that no running claim holds."""
    with read_connection(url) as connection:
        return lost_trials(connection)
