"""A running trial's writes: its start, one transaction per epoch (mtl-tune's metric rows and Optuna's writes
together), each with a read of the job's status and the trial's state.

Kept apart from ``storage/__init__`` because it needs Optuna's tables (and importing Optuna takes a while).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import Engine, bindparam, select

from storage._batched import TRIALS, BatchedRDBStorage, _Writes, postgresql_writes
from storage._engine import get_engine, session_scope, translate_errors
from storage._pipeline import Pipeline, Reply
from storage.claims import attach_trial
from storage.metrics import metric_record, write_epoch
from storage.models import StudyJob

# A worker on PostgreSQL does not wait for an epoch's reply after a short epoch (see ``TrialRecorder``); after an
# epoch longer than this it does, which costs a fraction of a millisecond.
WAIT_FOR_REPLY_AFTER_S = 0.05


@dataclass(frozen=True)
class EpochOutcome:
    job_status: str | None  # None when the job was deleted
    trial_running: bool  # False when Optuna's trial was finished elsewhere (failed as stale by another worker)


class TrialRecorder:
    """The writes of one trial a worker runs and holds in ``rdb``: ``start``, ``epoch`` per epoch, ``close``.

    On SQLite each call is one transaction that returns when committed. On PostgreSQL each call is one
    statement, its own transaction, sent on a connection held for the trial without waiting for the reply
    (``storage._pipeline``): the worker trains on while the database writes. ``epoch`` returns the job's
    status and the trial's state as the latest reply read saw them (None before the first): after an epoch
    longer than ``WAIT_FOR_REPLY_AFTER_S`` that is this epoch's, otherwise possibly an earlier one. ``close`` waits for
    every reply, so Optuna's final state is written after every epoch.
    """

    def __init__(self, url: str, rdb: BatchedRDBStorage, *, job_id: int, trial_id: int, trial_number: int) -> None:
        self.url, self.rdb = url, rdb
        self.job_id, self.trial_id, self.trial_number = job_id, trial_id, trial_number
        engine = get_engine(url)
        self._pipeline: Pipeline | None = None
        if engine.dialect.name == "postgresql":
            with translate_errors(url):
                self._pipeline = Pipeline(engine, self._on_reply, self._give_back)
        self._outcome: EpochOutcome | None = None  # no reply read yet
        self._last = time.monotonic()

    def start(self, claim_id: int) -> None:
        """Before training: the claim's trial number, the trial's parameters and attributes so far, and Optuna's
        first heartbeat for it (from then on a worker that dies leaves a trial Optuna will fail and retry)."""
        self._last = time.monotonic()
        if self._pipeline is None:
            with session_scope(self.url) as session:
                attach_trial(session, claim_id, self.trial_number)
                self.rdb.flush(self.trial_id, session.connection())
                self.rdb.write_heartbeat(self.trial_id, session.connection())
            return
        self._send(epoch=None, rows=(), claim_id=claim_id)

    def epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> EpochOutcome | None:
        """Every task's metric row and the trial's pending Optuna writes (its intermediate value, the pruner's
        bookkeeping); nothing is written once the trial is no longer running."""
        if self._pipeline is None:
            self._outcome = record_epoch(
                self.url,
                self.rdb,
                job_id=self.job_id,
                trial_id=self.trial_id,
                trial_number=self.trial_number,
                epoch=epoch,
                rows=rows,
            )
            return self._outcome
        now = time.monotonic()
        long_epoch, self._last = now - self._last > WAIT_FOR_REPLY_AFTER_S, now
        self._send(epoch=epoch, rows=rows, claim_id=None)
        with translate_errors(self.url):
            self._pipeline.wait() if long_epoch else self._pipeline.poll()
        return self._outcome

    def close(self) -> EpochOutcome | None:
        """Wait until everything sent is written; the outcome as of the last statement (None if none was sent)."""
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            with translate_errors(self.url):
                pipeline.close()
        return self._outcome

    def _send(self, *, epoch: int | None, rows: Sequence[Mapping[str, Any]], claim_id: int | None) -> None:
        assert self._pipeline is not None
        pending = self.rdb.take_pending(self.trial_id)
        statement, params = postgresql_statement(
            pending, self.job_id, self.trial_id, self.trial_number, epoch, rows, claim_id=claim_id
        )
        try:
            with translate_errors(self.url):
                self._pipeline.send(statement, params, pending)
        except BaseException:
            self.rdb.put_back_pending(self.trial_id, pending)
            raise

    def _on_reply(self, row: Reply) -> None:
        status, state, _ = row
        self._outcome = EpochOutcome(status, state == TrialState.RUNNING.name)

    def _give_back(self, pending: _Writes) -> None:
        """A statement that failed wrote nothing: its Optuna writes go back to the held trial."""
        self.rdb.put_back_pending(self.trial_id, pending)


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
    """One epoch's transaction, committed before this returns: every task's metric row and the trial's pending
    Optuna writes, with one read of the job's status and the trial's state.

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
    """PostgreSQL: the same transaction as one statement, run in autocommit: one round trip."""
    pending = rdb.take_pending(trial_id)
    statement, params = postgresql_statement(pending, job_id, trial_id, trial_number, epoch, rows)
    try:
        with translate_errors(engine.url.render_as_string()), engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.autocommit = True  # the statement is its own transaction: no BEGIN and COMMIT round trips
            try:
                status, state, _ = driver.execute(statement, params).fetchone()
            finally:
                driver.autocommit = False
    except BaseException:
        rdb.put_back_pending(trial_id, pending)
        raise
    return EpochOutcome(status, state == TrialState.RUNNING.name)


def postgresql_statement(
    pending: _Writes,
    job_id: int,
    trial_id: int,
    trial_number: int,
    epoch: int | None,
    rows: Sequence[Mapping[str, Any]],
    *,
    claim_id: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """A trial's writes as one statement of data-modifying CTEs over arrays, returning the job's status and the
    trial's state; Optuna's writes are guarded in SQL (written only while the trial runs).

    The statement lets its commit skip waiting for the disk: epochs are progress, not results. A trial's final
    state commits synchronously and makes its earlier writes durable with it; only a database crash mid-trial
    can lose its last epochs, and that trial is retried anyway.
    """
    ctes, params = postgresql_writes(pending)
    params |= {"job_id": job_id, "trial_id": trial_id, "trial_number": trial_number, "epoch": epoch}
    if rows:
        records = [metric_record(job_id, trial_number, epoch or 0, row) for row in rows]
        ctes.insert(0, _PG_METRICS)
        params["m_task"] = [r["task"] for r in records]
        params |= {f"m_{c}": [None if r[c] is None else float(r[c]) for r in records] for c in _METRIC_COLUMNS[1:]}
    if claim_id is not None:
        ctes += [_PG_ATTACH, _PG_TRIAL_HEARTBEAT]
        params["claim_id"] = claim_id
    return _with(tuple(ctes)), params


@functools.cache
def _with(ctes: tuple[str, ...]) -> str:
    """The statement around its CTEs; there are a handful of combinations, each built once."""
    with_clause = "WITH " + ", ".join(f"w{i} AS ({cte})" for i, cte in enumerate(ctes)) + " " if ctes else ""
    return with_clause + _PG_CHECK


_METRIC_COLUMNS = ("task", "train_loss", "val_loss", "metric", "weight", "sigma", "grad_norm")
_PG_METRICS = (
    "INSERT INTO epoch_metrics (job_id, trial_number, epoch, task, train_loss, val_loss, metric, weight, sigma, "
    "grad_norm) SELECT %(job_id)s, %(trial_number)s, %(epoch)s, u.* FROM unnest(%(m_task)s::varchar[], "
    "%(m_train_loss)s::float8[], %(m_val_loss)s::float8[], %(m_metric)s::float8[], %(m_weight)s::float8[], "
    "%(m_sigma)s::float8[], %(m_grad_norm)s::float8[]) AS u"
)
_PG_ATTACH = "UPDATE trial_claims SET trial_number = %(trial_number)s, heartbeat_at = now() WHERE id = %(claim_id)s"
# The database's clock, as Optuna's own heartbeat and its stale-trial check use.
_PG_TRIAL_HEARTBEAT = (
    "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (%(trial_id)s, CURRENT_TIMESTAMP) "
    "ON CONFLICT (trial_id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat"
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
