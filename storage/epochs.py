"""A running trial's per-epoch transaction: mtl-tune's metric rows and Optuna's writes together, one commit.

Kept apart from ``storage/__init__`` because it needs Optuna's tables (and importing Optuna takes a while).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import bindparam, func, select

from storage._batched import TRIALS, BatchedRDBStorage
from storage._engine import session_scope
from storage.metrics import write_epoch
from storage.models import StudyJob


@dataclass(frozen=True)
class EpochOutcome:
    job_status: str | None  # None when the job was deleted
    trial_running: bool  # False when Optuna's trial was finished elsewhere (failed as stale by another worker)


def record_epoch(
    url: str,
    rdb: BatchedRDBStorage,
    *,
    job_id: int,
    trial_id: int,
    trial_number: int,
    epoch: int,
    rows: Sequence[Mapping[str, Any]],
) -> EpochOutcome:
    """Every task's metric row and the trial's pending Optuna writes (its intermediate value, the pruner's
    bookkeeping) in one transaction, with one read of the job's status and the trial's state.

    Nothing is written to a trial that is no longer running.
    """
    with session_scope(url) as session:
        # Write first: on SQLite a transaction that starts by reading cannot always take the write lock later.
        write_epoch(session, job_id=job_id, trial_number=trial_number, epoch=epoch, rows=rows)
        connection = session.connection()
        check = _CHECK_POSTGRESQL if connection.dialect.name == "postgresql" else _CHECK
        status, state, *_ = connection.execute(check, {"job_id": job_id, "trial_id": trial_id}).one()
        running = state == TrialState.RUNNING
        if running:
            rdb.flush(trial_id, connection)
    return EpochOutcome(status, running)


_CHECK = select(
    select(StudyJob.status).where(StudyJob.id == bindparam("job_id")).scalar_subquery(),
    select(TRIALS.c.state).where(TRIALS.c.trial_id == bindparam("trial_id")).scalar_subquery(),
)
# On PostgreSQL the same read also lets this transaction commit without waiting for the WAL to reach the disk:
# epochs are progress, not results. A trial's final state commits synchronously and makes its earlier epochs
# durable with it; only a database crash mid-trial can lose its last epochs, and that trial is retried anyway.
_CHECK_POSTGRESQL = _CHECK.add_columns(func.set_config("synchronous_commit", "off", True))
