"""Per-epoch per-task metrics and per-trial summaries: what the dashboard plots and pages through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.claims import FINISHED_STATES
from storage.models import EpochMetric, TrialClaim, TrialSummary, utcnow
from storage.queries import finite

_REQUIRED_KEYS = ("task", "train_loss", "val_loss", "metric", "weight")


def write_epoch(
    session: Session | Connection,
    *,
    job_id: int,
    trial_number: int,
    epoch: int,
    rows: Sequence[Mapping[str, Any]],
    claim_id: int | None = None,
) -> None:
    """One row per task in a single bulk INSERT, plus the claim's heartbeat; the caller's scope commits once.

    Each row maps ``task, train_loss, val_loss, metric, weight`` and optionally ``series``: the strategy's other
    per-task series by name (``sigma``, ``grad_norm``, any a strategy reports), stored in one JSON column (null
    when there is none; a non-finite value, a diverged strategy's, as null: JSON has no NaN).
    """
    connection = session.connection() if isinstance(session, Session) else session
    insert_epochs(connection, epoch_records(job_id=job_id, trial_number=trial_number, epoch=epoch, rows=rows))
    if claim_id is not None:
        connection.execute(_HEARTBEAT, {"claim_id": claim_id, "now": utcnow()})


def epoch_records(
    *, job_id: int, trial_number: int, epoch: int, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One epoch's rows as ``insert_epochs`` writes them (see ``write_epoch``)."""
    return [
        {"job_id": job_id, "trial_number": trial_number, "epoch": epoch}
        | {key: row[key] for key in _REQUIRED_KEYS}
        | {"series": _series(row.get("series"))}
        for row in rows
    ]


def insert_epochs(connection: Connection, records: Sequence[Mapping[str, Any]]) -> None:
    """Epoch rows of any trials and epochs in one bulk INSERT. Core statements on the connection: this runs for
    every epoch of every trial, and the ORM layer's per-statement bookkeeping would cost more than the database."""
    if records:
        connection.execute(_INSERT_EPOCH, records)


_INSERT_EPOCH = insert(EpochMetric)
_HEARTBEAT = update(TrialClaim).where(TrialClaim.id == bindparam("claim_id")).values(heartbeat_at=bindparam("now"))


def write_summary(
    session: Session | Connection,
    *,
    job_id: int,
    trial_number: int,
    state: str,
    values: Sequence[float] | None,
    params: Mapping[str, Any],
    task_metrics: Mapping[str, Any] | None,
    duration_s: float | None,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> None:
    """Insert or replace the summary row of one trial: the first value is the objective; non-finite numbers (JSON
    has no NaN, PostgreSQL refuses it) are stored as null."""
    record = {
        "job_id": job_id,
        "trial_number": trial_number,
        "state": state,
        "objective": finite(values[0]) if values else None,
        "values": None if values is None else [finite(v) for v in values],
        "params": dict(params),
        "task_metrics": None if task_metrics is None else _json_safe(task_metrics),
        "duration_s": duration_s,
        "started_at": started_at,
        "finished_at": finished_at,
    }
    bind = session.get_bind() if isinstance(session, Session) else session
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(TrialSummary).values(record)
    changed = {key: upsert.excluded[key] for key in record if key not in ("job_id", "trial_number")}
    session.execute(upsert.on_conflict_do_update(index_elements=["job_id", "trial_number"], set_=changed))


def _series(series: Mapping[str, Any] | None) -> dict[str, float | None] | None:
    return {str(k): None if v is None else finite(float(v)) for k, v in series.items()} if series else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


_RUNG_VECTORS = (
    select(EpochMetric.trial_number, EpochMetric.task, EpochMetric.metric)
    .join(
        TrialSummary,
        (TrialSummary.job_id == EpochMetric.job_id) & (TrialSummary.trial_number == EpochMetric.trial_number),
    )
    .where(
        TrialSummary.job_id == bindparam("job_id"),
        TrialSummary.state.in_(FINISHED_STATES),  # the trials the ``dominated`` pruner compares a running one with
        EpochMetric.job_id == bindparam("job_id"),
        EpochMetric.epoch == bindparam("epoch"),
    )
    .order_by(EpochMetric.trial_number, EpochMetric.task)
)


def rung_vectors(session: Session | Connection, job_id: int, epoch: int) -> list[dict[str, float | None]]:
    """The per-task validation metric vectors (task -> metric) after ``epoch`` (0-based) of the job's finished
    trials (complete or pruned) that reached it, by trial number.

    One statement: the finished trials come from ``trial_summaries``' (job_id, state) index and each one's rows
    from ``epoch_metrics``' (job_id, trial_number, epoch, task) index. A metric stored as null (not finite) is
    None.
    """
    rows = session.execute(_RUNG_VECTORS, {"job_id": job_id, "epoch": epoch})
    vectors: dict[int, dict[str, float | None]] = {}
    for trial_number, task, metric in rows:
        vectors.setdefault(trial_number, {})[task] = metric
    return list(vectors.values())
