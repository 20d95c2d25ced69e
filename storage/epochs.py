"""A running trial's writes: its start, one transaction per epoch (mtl-tune's metric rows and Optuna's writes
together), each with a read of the job's status and the trial's state.

Kept apart from ``storage/__init__`` because it needs Optuna's tables (and importing Optuna takes a while).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Optuna's table models: Optuna has no public interface for writing a held trial's rows in the trial's own
# transaction, so this module uses them, and pyproject pins Optuna to the minor range the storage tests pass on.
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from storage import _engine
from storage._batched import TRIALS, BatchedRDBStorage, _utc_naive, _Writes, finish_trial, postgresql_writes
from storage._engine import get_engine, translate_errors, write_transaction
from storage._errors import StorageError
from storage._pipeline import Pipeline, Reply, pipeline_supported
from storage.claims import FINISHED_STATES, attach_trial, finish_claim
from storage.metrics import metric_record, summary_record, write_epoch, write_summary
from storage.models import StudyJob

# A worker on PostgreSQL does not wait for an epoch's reply after a short epoch (see ``TrialRecorder``); after an
# epoch longer than this it does, which costs a fraction of a millisecond.
WAIT_FOR_REPLY_AFTER_S = 0.05


@dataclass(frozen=True)
class EpochOutcome:
    job_status: str | None  # None when the job was deleted
    trial_running: bool  # False when Optuna's trial was finished elsewhere (failed as stale by another worker)


# The claim state a finished trial leaves its slot in.
CLAIM_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


class TrialRecorder:
    """The writes of one trial a worker runs and holds in ``rdb``: ``start``, ``epoch`` per epoch, ``finish``
    (``rdb`` calls it with the trial's final state, see ``BatchedRDBStorage.hold``), then ``close``.

    On SQLite each call is one transaction that returns when committed. On PostgreSQL each call is one
    transaction sent on a connection held for the trial, without waiting for the reply
    (``storage._pipeline``): the worker trains on while the database writes, in order. ``epoch`` returns the
    job's status and the trial's state as the latest reply read saw them (None before the first): after an
    epoch longer than ``WAIT_FOR_REPLY_AFTER_S`` that is this epoch's, otherwise possibly an earlier one.
    ``finish`` waits for its reply: the trial's final state, its claim and its summary commit together.
    """

    def __init__(
        self, url: str, rdb: BatchedRDBStorage, *, job_id: int, claim_id: int, trial_id: int, trial_number: int
    ) -> None:
        self.url, self.rdb = url, rdb
        self.job_id, self.claim_id, self.trial_id, self.trial_number = job_id, claim_id, trial_id, trial_number
        self.lost = False  # the trial was finished elsewhere (failed as stale by another worker)
        self.finished = False  # its final state, claim and summary are written
        engine = get_engine(url)
        self._pipeline: Pipeline | None = None
        if pipeline_supported(engine):
            with translate_errors(url):
                self._pipeline = Pipeline(engine)
        self._outcome: EpochOutcome | None = None  # no reply read yet
        self._sent_at = time.monotonic()  # when the pipeline last sent something

    def start(self) -> None:
        """Before training: the claim's trial number, the trial's parameters and attributes so far, and Optuna's
        first heartbeat for it (from then on a worker that dies leaves a trial Optuna will fail and retry)."""
        if self._pipeline is None:
            with write_transaction(self.url) as connection:
                attach_trial(connection, self.claim_id, self.trial_number)
                self.rdb.flush(self.trial_id, connection)
                self.rdb.write_heartbeat(self.trial_id, connection)
            return
        self._send(epoch=None, rows=(), attach=True)

    def epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> EpochOutcome | None:
        """Every task's metric row and the trial's pending Optuna writes (its intermediate value, the pruner's
        bookkeeping); nothing is written once the trial is no longer running."""
        if self._pipeline is None:
            outcome = record_epoch(
                self.url,
                self.rdb,
                job_id=self.job_id,
                trial_id=self.trial_id,
                trial_number=self.trial_number,
                epoch=epoch,
                rows=rows,
            )
            self._on_outcome(outcome)
            return outcome
        long_epoch = time.monotonic() - self._sent_at > WAIT_FOR_REPLY_AFTER_S
        self._send(epoch=epoch, rows=rows, attach=False)
        with translate_errors(self.url):
            self._pipeline.wait() if long_epoch else self._pipeline.poll()
        return self._outcome

    def finish(self, writes: _Writes, trial: FrozenTrial) -> bool:
        """``BatchedRDBStorage``'s finisher: the trial's final state and values, its pending writes, the claim
        closed and the trial's summary, in one transaction; False (nothing written) if it was not running."""
        if self._pipeline is not None:
            with suppress(StorageError):  # read below: a failed epoch gave its Optuna writes back to the trial
                self._pipeline.wait()  # every epoch's reply first: nothing sent earlier runs after what follows
        if self._pipeline is None or self._pipeline.failed:
            # A new connection writes it, with whatever failed epochs gave back (older than ``writes``).
            given_back = self.rdb.take_pending(self.trial_id)
            try:
                with write_transaction(self.url) as connection:
                    written = finish_trial(connection, trial, given_back | writes)
                    if written:
                        record_finished(connection, job_id=self.job_id, claim_id=self.claim_id, trial=trial)
            except BaseException:
                self.rdb.put_back_pending(self.trial_id, given_back)
                raise
        else:
            self._renew_if_idle()
            written = self._finish_postgresql(writes, trial)
        self.lost = self.lost or not written
        self.finished = written
        return written

    def _finish_postgresql(self, writes: _Writes, trial: FrozenTrial) -> bool:
        """One round trip: the job row's lock, then one statement whose every write is guarded by the trial's
        state change (and whose counts, read after the lock, see every claim committed before it)."""
        assert self._pipeline is not None and trial.datetime_complete is not None
        state = CLAIM_STATE.get(trial.state, "failed")
        summary = summary_record(job_id=self.job_id, state=state, **_summary_fields(trial))
        ctes, params = postgresql_writes(writes, guard=_FINISHED_GUARD)
        to_stored = models.TrialValueModel.value_to_stored_repr
        stored = [to_stored(v) for v in trial.values or ()]
        params |= {
            "job_id": self.job_id,
            "claim_id": self.claim_id,
            "trial_id": self.trial_id,
            "state": trial.state.name,
            "complete": _utc_naive(trial.datetime_complete),
            "v_value": [value for value, _ in stored],
            "v_kind": [kind.name for _, kind in stored],
            "claim_state": state,
            "claim_finished": int(state in FINISHED_STATES),
        }
        params |= {f"s_{key}": value for key, value in summary.items()}
        for key in ("values", "params", "task_metrics"):
            params[f"s_{key}"] = None if summary[key] is None else json.dumps(summary[key])
        written: list[bool] = []
        with translate_errors(self.url):
            self._pipeline.send(
                [(_PG_LOCK_JOB, params), (_finish_statement(tuple(ctes)), params)],
                on_reply=lambda row: written.append(row[0] == "1"),
            )
            self._pipeline.wait()
        return bool(written and written[0])

    def close(self) -> EpochOutcome | None:
        """Wait until everything sent is written and give the connection back; safe to call twice."""
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            with translate_errors(self.url):
                pipeline.close()
        return self._outcome

    def _renew_if_idle(self) -> None:
        """After the connection sat idle longer than the pool's ping interval (a long epoch), make sure it still
        answers, as the pool does for an idle connection; one that died (a restarted server, an idle timeout)
        is replaced instead of failing the trial."""
        assert self._pipeline is not None
        now = time.monotonic()
        idle, self._sent_at = now - self._sent_at, now
        pipeline = self._pipeline
        if idle <= _engine.PING_AFTER_IDLE_S or pipeline.failed or not pipeline.idle or pipeline.alive():
            return  # used a moment ago, already failed (that is raised), replies pending, or it answered
        with suppress(StorageError):
            pipeline.close()  # nothing was in flight: nothing is lost
        with translate_errors(self.url):
            self._pipeline = Pipeline(get_engine(self.url))

    def _send(self, *, epoch: int | None, rows: Sequence[Mapping[str, Any]], attach: bool) -> None:
        assert self._pipeline is not None
        self._renew_if_idle()
        pending = self.rdb.take_pending(self.trial_id)
        statement, params = postgresql_statement(
            pending,
            self.job_id,
            self.trial_id,
            self.trial_number,
            epoch,
            rows,
            claim_id=self.claim_id if attach else None,
        )

        def on_reply(row: Reply) -> None:
            status, trial_state, _ = row
            self._on_outcome(EpochOutcome(status, trial_state == TrialState.RUNNING.name))

        def on_error() -> None:  # the statement was rolled back: its Optuna writes go back to the held trial
            self.rdb.put_back_pending(self.trial_id, pending)

        try:
            with translate_errors(self.url):
                self._pipeline.send([(statement, params)], on_reply, on_error)
        except BaseException:
            self.rdb.put_back_pending(self.trial_id, pending)
            raise

    def _on_outcome(self, outcome: EpochOutcome) -> None:
        self._outcome = outcome
        self.lost = self.lost or not outcome.trial_running


def record_finished(db: Session | Connection, *, job_id: int, claim_id: int, trial: FrozenTrial) -> None:
    """A finished trial's claim closed and its summary written, in the caller's transaction; nothing when the
    claim was deleted with its study."""
    state = CLAIM_STATE.get(trial.state, "failed")
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
        # The same transaction as one statement, run in autocommit: one round trip.
        pending = rdb.take_pending(trial_id)
        statement, params = postgresql_statement(pending, job_id, trial_id, trial_number, epoch, rows)
        try:
            with translate_errors(url), engine.connect() as connection:
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
    with write_transaction(url) as connection:  # BEGIN IMMEDIATE: the write lock first, then the reads
        write_epoch(connection, job_id=job_id, trial_number=trial_number, epoch=epoch, rows=rows)
        status, state = connection.execute(_CHECK, {"job_id": job_id, "trial_id": trial_id}).one()
        running = state == TrialState.RUNNING
        if running:
            rdb.flush(trial_id, connection)
    return EpochOutcome(status, running)


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

    The statement lets its commit skip waiting for the disk: the start and the epochs are progress, not results.
    A trial's final state commits synchronously and makes its earlier writes durable with it; only a database
    crash mid-trial can lose its last epochs (or its start), and that trial is retried anyway.
    """
    ctes, params = postgresql_writes(pending)
    params |= {"job_id": job_id, "trial_id": trial_id, "trial_number": trial_number, "epoch": epoch}
    if rows:
        records = [metric_record(job_id, trial_number, epoch or 0, row) for row in rows]
        ctes.insert(0, _PG_METRICS)
        params["m_task"] = [r["task"] for r in records]
        params |= {f"m_{c}": [None if r[c] is None else float(r[c]) for r in records] for c in _METRIC_COLUMNS[1:]}
        params["m_series"] = [None if r["series"] is None else json.dumps(r["series"]) for r in records]
    if claim_id is not None:
        ctes += [_PG_ATTACH, _PG_TRIAL_HEARTBEAT]
        params["claim_id"] = claim_id
    return _with(tuple(ctes)), params


@functools.cache
def _with(ctes: tuple[str, ...]) -> str:
    """The statement around its CTEs; there are a handful of combinations, each built once."""
    with_clause = "WITH " + ", ".join(f"w{i} AS ({cte})" for i, cte in enumerate(ctes)) + " " if ctes else ""
    return with_clause + _PG_CHECK


_METRIC_COLUMNS = ("task", "train_loss", "val_loss", "metric", "weight")
# Each task's series (``metric_record``) travel as JSON texts, one array element per task.
_PG_METRICS = (
    "INSERT INTO epoch_metrics (job_id, trial_number, epoch, task, train_loss, val_loss, metric, weight, series) "
    "SELECT %(job_id)s, %(trial_number)s, %(epoch)s, u.* FROM unnest(%(m_task)s::varchar[], "
    "%(m_train_loss)s::float8[], %(m_val_loss)s::float8[], %(m_metric)s::float8[], %(m_weight)s::float8[], "
    "%(m_series)s::json[]) AS u"
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


# A trial's end: the job row is locked first, as ``claim_slot`` and ``finish_claim`` do, so that two workers
# finishing the last trials cannot both miss the target. Every write of the statement after it is guarded by
# the trial's own state change (``u``): a trial no longer running gets nothing written.
_PG_LOCK_JOB = "SELECT id FROM study_jobs WHERE id = %(job_id)s FOR UPDATE"
_FINISHED_GUARD = "WHERE EXISTS (SELECT 1 FROM u)"
_PG_FINISH_TRIAL = (
    "UPDATE trials SET state = %(state)s::trialstate, datetime_complete = %(complete)s::timestamp "
    "WHERE trial_id = %(trial_id)s AND state = 'RUNNING' RETURNING trial_id"
)
_PG_FINISH_VALUES = (
    "INSERT INTO trial_values (trial_id, objective, value, value_type) "
    "SELECT %(trial_id)s, o - 1, v, k::trialvaluetype "
    "FROM unnest(%(v_value)s::float8[], %(v_kind)s::text[]) WITH ORDINALITY AS x(v, k, o) " + _FINISHED_GUARD + " "
    "ON CONFLICT (trial_id, objective) DO UPDATE SET value = EXCLUDED.value, value_type = EXCLUDED.value_type"
)
_PG_FINISH_CLAIM = (
    "UPDATE trial_claims SET state = %(claim_state)s, finished_at = now(), heartbeat_at = now() "
    "WHERE id = %(claim_id)s AND state NOT IN ('complete', 'pruned') AND EXISTS (SELECT 1 FROM u) RETURNING id"
)
_PG_FINISH_SUMMARY = (
    'INSERT INTO trial_summaries (job_id, trial_number, state, objective, "values", params, task_metrics, '
    "duration_s, started_at, finished_at) SELECT %(s_job_id)s, %(s_trial_number)s, %(s_state)s, "
    "%(s_objective)s::float8, %(s_values)s::json, %(s_params)s::json, %(s_task_metrics)s::json, "
    "%(s_duration_s)s::float8, %(s_started_at)s::timestamptz, %(s_finished_at)s::timestamptz "
    "WHERE EXISTS (SELECT 1 FROM c) "  # the claim was closed: not when the study was deleted meanwhile
    "ON CONFLICT (job_id, trial_number) DO UPDATE SET state = EXCLUDED.state, objective = EXCLUDED.objective, "
    '"values" = EXCLUDED."values", params = EXCLUDED.params, task_metrics = EXCLUDED.task_metrics, '
    "duration_s = EXCLUDED.duration_s, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at"
)
# As ``finish_claim``: the job is completed when its finished claims reach the target, and a stopping job is
# stopped once no claim of it runs. The claim closed above is not visible to this statement's reads: counted apart.
_PG_FINISH_JOB = (
    "UPDATE study_jobs SET status = CASE WHEN f.done >= study_jobs.n_trials THEN 'completed' ELSE 'stopped' END, "
    "updated_at = now() FROM (SELECT (SELECT count(*) FROM trial_claims WHERE job_id = %(job_id)s "
    "AND state IN ('complete', 'pruned') AND id <> %(claim_id)s) + %(claim_finished)s AS done, "
    "EXISTS (SELECT 1 FROM trial_claims WHERE job_id = %(job_id)s AND state = 'running' AND id <> %(claim_id)s) "
    "AS busy) AS f WHERE study_jobs.id = %(job_id)s AND EXISTS (SELECT 1 FROM c) "
    "AND study_jobs.status IN ('queued', 'running', 'stopping') "
    "AND (f.done >= study_jobs.n_trials OR (study_jobs.status = 'stopping' AND NOT f.busy))"
)


@functools.cache
def _finish_statement(writes: tuple[str, ...]) -> str:
    ctes = [
        ("u", _PG_FINISH_TRIAL),
        ("v", _PG_FINISH_VALUES),
        *((f"w{i}", cte) for i, cte in enumerate(writes)),
        ("c", _PG_FINISH_CLAIM),
        ("s", _PG_FINISH_SUMMARY),
        ("j", _PG_FINISH_JOB),
    ]
    return "WITH " + ", ".join(f"{name} AS ({cte})" for name, cte in ctes) + " SELECT count(*) FROM u"


_CHECK = select(
    select(StudyJob.status).where(StudyJob.id == bindparam("job_id")).scalar_subquery(),
    select(TRIALS.c.state).where(TRIALS.c.trial_id == bindparam("trial_id")).scalar_subquery(),
)
