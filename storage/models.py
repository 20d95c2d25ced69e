"""mtl-tune's own tables (never Optuna's): study jobs, trial-slot claims, per-epoch metrics, trial summaries and
confirmation runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import Dialect, ForeignKey, Index, MetaData, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON, DateTime, Float, String, Text, TypeDecorator

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        float: Float(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class StudyJob(Base):
    """What a study was asked to do (by the CLI or REST), and where it stands."""

    __tablename__ = "study_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_name: Mapped[str] = mapped_column(String(64), unique=True)
    problem: Mapped[str] = mapped_column(String(128))
    problem_options: Mapped[dict[str, Any]]
    space: Mapped[dict[str, Any] | None]
    objective: Mapped[str] = mapped_column(String(16))  # scalar | pareto | compare
    directions: Mapped[list[Any]]  # "minimize" / "maximize", one per objective value
    sampler: Mapped[str] = mapped_column(String(64))
    pruner: Mapped[str] = mapped_column(String(64))
    epochs: Mapped[int]
    n_trials: Mapped[int]  # target number of finished (complete or pruned) trials
    seed: Mapped[int]
    source: Mapped[str] = mapped_column(String(16))  # cli | rest
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Seeds of the confirmation runs queued when the job reaches its target (0: none queued then).
    confirm_seeds: Mapped[int] = mapped_column(default=3, server_default="3")
    #: How many of the best configurations are confirmed (with the best of each strategy and of static weighting).
    confirm_top: Mapped[int] = mapped_column(default=1, server_default="1")
    #: Confirmation was asked for (target reached, or ``study confirm``) and its runs are not queued yet.
    confirm_pending: Mapped[bool] = mapped_column(default=False, server_default=false())


class TrialClaim(Base):
    """One trial slot of a job, held by a worker while it runs the trial."""

    __tablename__ = "trial_claims"
    __table_args__ = (Index(None, "job_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("study_jobs.id", ondelete="CASCADE"))  # indexed with state
    worker: Mapped[str] = mapped_column(String(255))  # host:pid
    state: Mapped[str] = mapped_column(String(16))  # running | complete | pruned | failed | interrupted | lost
    trial_number: Mapped[int | None]
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class EpochMetric(Base):
    """One task's numbers at the end of one epoch of one trial."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (
        # Its index also serves (job_id, trial_number) lookups, so a separate index would only slow writes.
        UniqueConstraint("job_id", "trial_number", "epoch", "task"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("study_jobs.id", ondelete="CASCADE"))
    trial_number: Mapped[int]
    epoch: Mapped[int]
    task: Mapped[str] = mapped_column(String(128))
    train_loss: Mapped[float]
    val_loss: Mapped[float]
    metric: Mapped[float]
    weight: Mapped[float]
    #: Every other per-task series the strategy reported, by name (``sigma``, ``grad_norm``, ...); null when none.
    #: A new series needs no column: a strategy names it in ``report()``.
    series: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class TrialSummary(Base):
    """A finished trial in one row, so trial lists page through an index instead of loading Optuna trials."""

    __tablename__ = "trial_summaries"
    __table_args__ = (
        UniqueConstraint("job_id", "trial_number"),
        Index(None, "job_id", "state"),
        Index(None, "job_id", "objective"),
        Index(None, "job_id", "duration_s"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("study_jobs.id", ondelete="CASCADE"))
    trial_number: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    objective: Mapped[float | None]  # the first objective value
    values: Mapped[list[Any] | None]
    params: Mapped[dict[str, Any]]
    task_metrics: Mapped[dict[str, Any] | None]  # {task: {val_loss, metric, weight, sigma, series}}
    duration_s: Mapped[float | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ConfirmationRun(Base):
    """One configuration of a study trained again with one seed and judged on held-out data.

    Runs never count toward the job's target and never reach Optuna: the sampler does not see them. ``current``
    runs make the verdict; a later request keeps the others (their results are reused when chosen again).
    """

    __tablename__ = "confirmation_runs"
    __table_args__ = (UniqueConstraint("job_id", "trial_number", "seed"), Index(None, "state", "current"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("study_jobs.id", ondelete="CASCADE"))
    trial_number: Mapped[int]  # the Optuna trial whose configuration is trained again
    seed: Mapped[int]
    roles: Mapped[list[Any]]  # why it is confirmed: "baseline", "best", "top 2", "best gradnorm", "static", "pareto"
    current: Mapped[bool]
    config: Mapped[dict[str, Any]]  # the trial's configuration with this run's seed
    state: Mapped[str] = mapped_column(String(16))  # queued | running | complete | failed
    worker: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    split: Mapped[str | None] = mapped_column(String(16))  # test, or validation for a problem without a test split
    results: Mapped[dict[str, Any] | None]  # {task: {"loss": ..., "metric": ...}} on ``split``
    fail_reason: Mapped[str | None] = mapped_column(Text)
