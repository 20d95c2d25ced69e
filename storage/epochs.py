"""A running trial's writes: its start, one transaction per epoch (mtl-tune's metric rows and Optuna's writes
together), each with a read of the job's status and the trial's state.

Kept apart from ``storage/__init__`` because it needs Optuna's tables (and importing Optuna takes a while).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from storage._engine import get_engine, translate_errors, write_transaction
from storage._optuna_tables import TRIALS, LostTrial, Writes, finish_trial, lost_trials
from storage._worker_storage import WorkerStorage
from storage.claims import INTERRUPTED, INTERRUPTED_ATTR, attach_trial, finish_claim
from storage.metrics import write_epoch, write_summary
from storage.models import StudyJob


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
    (``rdb`` calls it with the trial's final state, see ``WorkerStorage.hold``). Each is one transaction,
    the same Core statements on SQLite and PostgreSQL, committed before it returns.

    This recorder is the trial's one owner in the database: ``lost`` (the trial was finished elsewhere: failed as
    lost by another worker) and ``finished`` (its final state, claim and summary written together) are its own.
    """

    def __init__(
        self, url: str, rdb: WorkerStorage, *, job_id: int, claim_id: int, trial_id: int, trial_number: int
    ) -> None:
        self.url, self.rdb = url, rdb
        self.job_id, self.claim_id, self.trial_id, self.trial_number = job_id, claim_id, trial_id, trial_number
        self.lost = False
        self.finished = False

    def start(self) -> None:
        """Before training: the claim's trial number (from then on, a worker that dies leaves a lost trial that
        other workers fail and retry) and the trial's parameters and attributes so far."""
        with write_transaction(self.url) as connection:
            attach_trial(connection, self.claim_id, self.trial_number)
            self.rdb.flush(self.trial_id, connection)

    def epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> EpochOutcome:
        """Every task's metric row and the trial's pending Optuna writes (its intermediate value, the pruner's
        bookkeeping); nothing is written once the trial is no longer running."""
        outcome = record_epoch(
            self.url,
            self.rdb,
            job_id=self.job_id,
            trial_id=self.trial_id,
            trial_number=self.trial_number,
            epoch=epoch,
            rows=rows,
        )
        self.lost = self.lost or not outcome.trial_running
        return outcome

    def finish(self, writes: Writes, trial: FrozenTrial) -> bool:
        """``WorkerStorage``'s finisher: the trial's final state and values, its pending writes, the claim
        closed and the trial's summary, in one transaction; False (nothing written) if it was not running."""
        with write_transaction(self.url) as connection:
            written = finish_trial(connection, trial, writes)
            if written:
                record_finished(connection, job_id=self.job_id, claim_id=self.claim_id, trial=trial)
        self.lost = self.lost or not written
        self.finished = written
        return written


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
    duration = trial.duration.total_seconds() if trial.duration else None
    return {
        "trial_number": trial.number,
        "values": trial.values,
        "params": trial.params,
        "task_metrics": trial.user_attrs.get("tasks"),
        "duration_s": duration,
        "started_at": _utc(trial.datetime_start),
        "finished_at": _utc(trial.datetime_complete),
    }


def _utc(moment: datetime | None) -> datetime | None:
    """Optuna hands out naive local times; the summaries store aware UTC ones."""
    return moment.astimezone(UTC) if moment is not None else None


def record_epoch(
    url: str,
    rdb: WorkerStorage,
    *,
    job_id: int,
    trial_id: int,
    trial_number: int,
    epoch: int,
    rows: Sequence[Mapping[str, Any]],
) -> EpochOutcome:
    """One epoch's transaction, committed before this returns: every task's metric row and the trial's pending
    Optuna writes, with one read of the job's status and the trial's state.

    Nothing is written to a trial that is no longer running.
    """
    with write_transaction(url) as connection:  # BEGIN IMMEDIATE: the write lock first, then the reads
        write_epoch(connection, job_id=job_id, trial_number=trial_number, epoch=epoch, rows=rows)
        status, state = connection.execute(_CHECK, {"job_id": job_id, "trial_id": trial_id}).one()
        running = state == TrialState.RUNNING
        if running:
            rdb.flush(trial_id, connection)
    return EpochOutcome(status, running)


_CHECK = select(
    select(StudyJob.status).where(StudyJob.id == bindparam("job_id")).scalar_subquery(),
    select(TRIALS.c.state).where(TRIALS.c.trial_id == bindparam("trial_id")).scalar_subquery(),
)


def find_lost_trials(url: str) -> list[LostTrial]:
    """Trials running in Optuna whose worker was lost (their claim reaped) and that no running claim holds."""
    with translate_errors(url), get_engine(url).connect() as connection:
        return lost_trials(connection)
