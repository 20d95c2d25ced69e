"""A running trial's per-epoch transaction: mtl-tune's metric rows and Optuna's writes together, one commit.

Kept apart from ``storage/__init__`` because it needs Optuna's tables (and importing Optuna takes a while).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import Engine, bindparam, select

from storage._batched import TRIALS, BatchedRDBStorage, postgresql_writes
from storage._engine import get_engine, session_scope, translate_errors
from storage.metrics import metric_record, write_epoch
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
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        return _record_epoch_postgresql(engine, rdb, job_id, trial_id, trial_number, epoch, rows)
    with session_scope(url) as session:
        # Write first: on SQLite a transaction that starts by reading cannot always take the write lock later.
        write_epoch(session, job_id=job_id, trial_number=trial_number, epoch=epoch, rows=rows)
        connection = session.connection()
        status, state = connection.execute(_CHECK, {"job_id": job_id, "trial_id": trial_id}).one()
        running = state == TrialState.RUNNING
        if running:
            rdb.flush(trial_id, connection)
    return EpochOutcome(status, running)


def _record_epoch_postgresql(
    engine: Engine,
    rdb: BatchedRDBStorage,
    job_id: int,
    trial_id: int,
    trial_number: int,
    epoch: int,
    rows: Sequence[Mapping[str, Any]],
) -> EpochOutcome:
    """PostgreSQL: the same transaction as one statement (data-modifying CTEs over arrays, run in autocommit),
    so an epoch costs one round trip. Optuna's writes are guarded in SQL (written only while the trial runs),
    and the statement lets its commit skip waiting for the disk: epochs are progress, not results. A trial's
    final state commits synchronously and makes its earlier epochs durable with it; only a database crash
    mid-trial can lose its last epochs, and that trial is retried anyway."""
    pending = rdb.take_pending(trial_id)
    ctes, params = postgresql_writes(pending)
    params |= {"job_id": job_id, "trial_id": trial_id, "trial_number": trial_number, "epoch": epoch}
    if rows:
        records = [metric_record(job_id, trial_number, epoch, row) for row in rows]
        ctes.insert(0, _PG_METRICS)
        params |= {f"m_{column}": [r[column] for r in records] for column in _METRIC_COLUMNS}
    with_clause = "WITH " + ", ".join(f"w{i} AS ({cte})" for i, cte in enumerate(ctes)) + " " if ctes else ""
    try:
        with translate_errors(engine.url.render_as_string()), engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.autocommit = True  # the statement is its own transaction: no BEGIN and COMMIT round trips
            try:
                status, state, _ = driver.execute(with_clause + _PG_CHECK, params).fetchone()
            finally:
                driver.autocommit = False
    except BaseException:
        rdb.put_back_pending(trial_id, pending)
        raise
    return EpochOutcome(status, state == TrialState.RUNNING.name)


_METRIC_COLUMNS = ("task", "train_loss", "val_loss", "metric", "weight", "sigma", "grad_norm")
_PG_METRICS = (
    "INSERT INTO epoch_metrics (job_id, trial_number, epoch, task, train_loss, val_loss, metric, weight, sigma, "
    "grad_norm) SELECT %(job_id)s, %(trial_number)s, %(epoch)s, u.* FROM unnest(%(m_task)s::varchar[], "
    "%(m_train_loss)s::float8[], %(m_val_loss)s::float8[], %(m_metric)s::float8[], %(m_weight)s::float8[], "
    "%(m_sigma)s::float8[], %(m_grad_norm)s::float8[]) AS u"
)
_PG_CHECK = (
    "SELECT (SELECT status FROM study_jobs WHERE id = %(job_id)s), "
    "(SELECT state::text FROM trials WHERE trial_id = %(trial_id)s), "
    "set_config('synchronous_commit', 'off', true)"
)


_CHECK = select(
    select(StudyJob.status).where(StudyJob.id == bindparam("job_id")).scalar_subquery(),
    select(TRIALS.c.state).where(TRIALS.c.trial_id == bindparam("trial_id")).scalar_subquery(),
)
