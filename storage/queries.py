"""The read queries the CLI and the API share: each one served by an index, none loading every trial of a study.

mtl-tune's own tables answer almost everything. A few questions only Optuna's tables can answer (which trial is the
baseline, the tasks the study recorded, the parameters' distributions); those are read-only queries on the tables
``_optuna_tables`` declares, bounded the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import ColumnElement, func, literal_column, select, table
from sqlalchemy import column as col
from sqlalchemy.orm import Session

from storage._optuna_tables import PARAMS, STUDIES, TRIALS, USER_ATTRS
from storage.claims import CLAIM_STATES, counted_state
from storage.confirmations import run_counts
from storage.jobs import get_job
from storage.models import EpochMetric, StudyJob, TrialClaim, TrialSummary

#: The Optuna user attribute that marks a study's baseline trial (equal weighting, default learning rates).
BASELINE_ATTR = "baseline"

# The one Optuna table ``_optuna_tables`` does not declare (workers never read it there).
_STUDY_ATTRS = table("study_user_attributes", col("study_id"), col("key"), col("value_json"))


@dataclass(frozen=True)
class StudyProgress:
    study_name: str
    problem: str
    objective: str
    status: str
    n_trials: int
    running: int
    complete: int
    pruned: int
    failed: int
    best_value: float | None  # scalar studies only: the best first objective value of a complete trial
    last_error: str | None
    confirm_pending: bool = False  # a confirmation was asked for and its runs are not queued yet
    confirm_runs: dict[str, int] | None = None  # the current confirmation runs per state
    interrupted: int = 0  # ended by a worker's interrupt or a stop request: not failures

    @property
    def confirming(self) -> bool:
        """A confirmation waits to be queued or has runs not finished yet."""
        runs = self.confirm_runs or {}
        return self.confirm_pending or bool(runs.get("queued") or runs.get("running"))


def study_progress(session: Session, study_name: str) -> StudyProgress:
    """Where the job stands; raises ``StudyNotFound``."""
    job = get_job(session, study_name)
    counts = _job_claim_counts(session, job.id)
    best = best_trial(session, job=job) if job.objective != "pareto" else None
    return StudyProgress(
        study_name=job.study_name, problem=job.problem, objective=job.objective, status=job.status,
        n_trials=job.n_trials, running=counts["running"], complete=counts["complete"], pruned=counts["pruned"],
        failed=counts["failed"], best_value=best.objective if best is not None else None, last_error=job.last_error,
        confirm_pending=job.confirm_pending, confirm_runs=run_counts(session, job.id),
        interrupted=counts["interrupted"],
    )  # fmt: skip


def claim_counts(session: Session, study_name: str) -> dict[str, int]:
    """Claims of the job per state (every state present, zero included); raises ``StudyNotFound``."""
    return _job_claim_counts(session, get_job(session, study_name).id)


def _job_claim_counts(session: Session, job_id: int) -> dict[str, int]:
    return dict.fromkeys(CLAIM_STATES, 0) | claim_counts_by_job(session, job_ids=[job_id]).get(job_id, {})


def claim_counts_by_job(session: Session, *, job_ids: Sequence[int] | None = None) -> dict[int, dict[str, int]]:
    """Claims per job and state, from the ``(job_id, state)`` index; jobs without claims are absent."""
    query = select(TrialClaim.job_id, TrialClaim.state, func.count()).group_by(TrialClaim.job_id, TrialClaim.state)
    if job_ids is not None:
        query = query.where(TrialClaim.job_id.in_(job_ids))
    counts: dict[int, dict[str, int]] = {}
    for job_id, state, n in session.execute(query):
        per_state = counts.setdefault(job_id, {})
        per_state[counted_state(state)] = per_state.get(counted_state(state), 0) + n
    return counts


def best_trial(session: Session, *, job: StudyJob) -> TrialSummary | None:
    """The complete trial with the best first objective value (walks the ``(job_id, objective)`` index)."""
    objective = TrialSummary.objective
    order = objective.desc() if job.directions[0] == "maximize" else objective.asc()
    query = (
        select(TrialSummary)
        .where(TrialSummary.job_id == job.id, objective.is_not(None), TrialSummary.state == "complete")
        .order_by(order, TrialSummary.id)
        .limit(1)
    )
    return session.scalars(query).first()


def count_trials(session: Session, *, job_id: int, state: str | None = None) -> int:
    query = select(func.count()).select_from(TrialSummary).where(TrialSummary.job_id == job_id)
    if state is not None:
        query = query.where(TrialSummary.state == state)
    return session.scalar(query) or 0


def complete_values(session: Session, *, job_id: int, after_id: int = 0) -> list[tuple[int, int, Any]]:
    """``(id, trial_number, values)`` of the complete trials whose summary id is above ``after_id``, by id.

    Summary ids grow as trials finish, so ``after_id`` fetches only what finished since a previous call.
    """
    query = (
        select(TrialSummary.id, TrialSummary.trial_number, TrialSummary.values)
        .where(TrialSummary.job_id == job_id, TrialSummary.state == "complete", TrialSummary.id > after_id)
        .order_by(TrialSummary.id)
    )
    return [(id_, number, values) for id_, number, values in session.execute(query)]


def summaries(session: Session, *, job_id: int, numbers: Sequence[int]) -> list[TrialSummary]:
    query = select(TrialSummary).where(TrialSummary.job_id == job_id, TrialSummary.trial_number.in_(numbers))
    return list(session.scalars(query.order_by(TrialSummary.trial_number)))


def summary(session: Session, *, job_id: int, number: int) -> TrialSummary | None:
    query = select(TrialSummary).where(TrialSummary.job_id == job_id, TrialSummary.trial_number == number)
    return session.scalars(query).one_or_none()


def trial_page(
    session: Session, *, job_id: int, state: str | None, order: str, limit: int, offset: int
) -> tuple[int, list[TrialSummary]]:
    """One page of a study's trials and the number of trials matching ``state``; missing values sort last.

    The page's ids are picked first along an index (``(job_id, trial_number)``, ``(job_id, objective)``; rows carry
    JSON, so sorting whole rows would read them all), then only those rows are loaded. Rows with a value and rows
    without one are paged apart, because an ``IS NULL`` sort key would keep either backend off the index.
    """
    descending, field = order.startswith("-"), order.removeprefix("-")  # [-]number, [-]objective, [-]duration_s
    key = {
        "number": TrialSummary.trial_number,
        "objective": TrialSummary.objective,
        "duration_s": TrialSummary.duration_s,
    }[field]
    ids = select(TrialSummary.id).where(TrialSummary.job_id == job_id)
    if state is not None:
        ids = ids.where(TrialSummary.state == state)
    keys = [key] if field == "number" else [key, TrialSummary.id]  # trial numbers are unique per job
    ordering = [k.desc() if descending else k.asc() for k in keys]
    page_ids = list(session.scalars(ids.where(key.is_not(None)).order_by(*ordering).limit(limit).offset(offset)))
    if len(page_ids) < limit and field != "number":
        with_value = session.scalar(select(func.count()).select_from(ids.where(key.is_not(None)).subquery())) or 0
        missing = ids.where(key.is_(None)).order_by(TrialSummary.id)
        page_ids += session.scalars(missing.limit(limit - len(page_ids)).offset(max(0, offset - with_value)))
    rows = {row.id: row for row in session.scalars(select(TrialSummary).where(TrialSummary.id.in_(page_ids)))}
    return count_trials(session, job_id=job_id, state=state), [rows[i] for i in page_ids if i in rows]


def history(
    session: Session, *, job_id: int, after: int, limit: int | None, values: bool = True
) -> list[tuple[int, str, float | None, Any]]:
    """``(trial_number, state, objective, values)`` of trials numbered above ``after``, in number order.

    ``values=False`` skips decoding the JSON column (scalar studies: values are ``[objective]``) and gives None.
    """
    stored: ColumnElement[Any] = TrialSummary.values.expression if values else literal_column("NULL")
    query = (
        select(TrialSummary.trial_number, TrialSummary.state, TrialSummary.objective, stored)
        .where(TrialSummary.job_id == job_id, TrialSummary.trial_number > after)
        .order_by(TrialSummary.trial_number)
    )
    if limit is not None:
        query = query.limit(limit)
    return [(number, state, objective, vals) for number, state, objective, vals in session.execute(query)]


def recent_complete(session: Session, *, job_id: int, limit: int) -> list[tuple[int, Any, Any]]:
    """``(trial_number, values, params)`` of the ``limit`` most recent complete trials."""
    query = (
        select(TrialSummary.trial_number, TrialSummary.values, TrialSummary.params)
        .where(TrialSummary.job_id == job_id, TrialSummary.state == "complete")
        .order_by(TrialSummary.trial_number.desc())
        .limit(limit)
    )
    return [(number, values, params) for number, values, params in session.execute(query)]


def trial_curves(
    session: Session, *, job_id: int, trial_number: int, after_epoch: int | None = None
) -> list[EpochMetric]:
    """One trial's per-epoch per-task rows (only epochs after ``after_epoch`` when given), by epoch then task."""
    query = select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.trial_number == trial_number)
    if after_epoch is not None:
        query = query.where(EpochMetric.epoch > after_epoch)
    return list(session.scalars(query.order_by(EpochMetric.epoch, EpochMetric.task)))


def live_workers(session: Session, *, since: datetime) -> set[str]:
    """Workers holding a running claim with a heartbeat after ``since`` (one ``(job_id, state)`` probe per job)."""
    query = select(TrialClaim.worker).where(
        TrialClaim.job_id.in_(select(StudyJob.id)), TrialClaim.state == "running", TrialClaim.heartbeat_at > since
    )
    return set(session.scalars(query.distinct()))


# --- Optuna's tables (read only) ---------------------------------------------------------------------------------


def optuna_study_id(session: Session, *, study_name: str) -> int | None:
    return session.scalar(select(STUDIES.c.study_id).where(STUDIES.c.study_name == study_name))


def recorded_tasks(tasks: Any, metric_names: Any) -> list[dict[str, str]]:
    """A study's tasks (name, kind, metric, direction) from its user attributes ``tasks`` and ``metric_names``.

    Studies created before the ``tasks`` attribute recorded metric names only. Their tasks could have two kinds
    of metric: accuracy (classification, the only maximised one) or rmse/mse (regression, minimised); this is what
    those tasks declared, and no study recorded since is read this way.
    """
    if isinstance(tasks, list):
        return [{k: str(task[k]) for k in ("name", "kind", "metric", "direction")} for task in tasks]
    return [
        {
            "name": str(name),
            "kind": "classification" if metric == "accuracy" else "regression",
            "metric": str(metric),
            "direction": "maximize" if metric == "accuracy" else "minimize",
        }
        for name, metric in (metric_names.items() if isinstance(metric_names, dict) else ())
    ]


def finite(value: Any) -> float | None:
    """A number as JSON can carry it: a non-finite one (a diverged metric), or anything not a number, is None."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def study_tasks(session: Session, *, study_id: int) -> list[dict[str, str]]:
    """The study's tasks as recorded at launch (``recorded_tasks``)."""
    tasks = study_user_attr(session, study_id=study_id, key="tasks")
    names = None if isinstance(tasks, list) else study_user_attr(session, study_id=study_id, key="metric_names")
    return recorded_tasks(tasks, names)


def study_user_attr(session: Session, *, study_id: int, key: str) -> Any:
    """A study user attribute (decoded), or None."""
    query = select(_STUDY_ATTRS.c.value_json).where(_STUDY_ATTRS.c.study_id == study_id, _STUDY_ATTRS.c.key == key)
    value = session.scalar(query)
    return None if value is None else json.loads(value)


def baseline_number(session: Session, *, study_id: int, attr: str) -> int | None:
    """The lowest-numbered complete trial carrying the baseline user attribute.

    Scans the study's trials; callers ask only when trial 0 (the baseline unless it had to be retried) is not
    complete, and cache the answer.
    """
    query = (
        select(func.min(TRIALS.c.number))
        .join(USER_ATTRS, USER_ATTRS.c.trial_id == TRIALS.c.trial_id)
        .where(TRIALS.c.study_id == study_id, TRIALS.c.state == TrialState.COMPLETE, USER_ATTRS.c.key == attr)
    )
    return session.scalar(query)


def optuna_trial_id(session: Session, *, study_id: int, number: int) -> int | None:
    query = select(TRIALS.c.trial_id).where(TRIALS.c.study_id == study_id, TRIALS.c.number == number)
    if session.get_bind().dialect.name == "sqlite":
        # Optuna numbers a trial by how many trials of its study came before it, so trial n has the study's
        # (n+1)-th smallest id: SQLite walks its (study_id, trial_id) index there instead of reading every row of
        # the study (50 ms at 100,000 trials). Checked, and looked up the plain way when it does not hold.
        ranked = (
            select(TRIALS.c.trial_id, TRIALS.c.number)
            .where(TRIALS.c.study_id == study_id)
            .order_by(TRIALS.c.trial_id)
            .limit(1)
            .offset(number)
        )
        row = session.execute(ranked).first()
        if row is not None and row.number == number:
            return int(row.trial_id)
    return session.scalar(query)


def param_distributions(session: Session, *, study_id: int, recent: int = 500) -> dict[str, str]:
    """``{param: distribution JSON}`` as Optuna recorded them in the study's ``recent`` newest trials."""
    newest = (
        select(TRIALS.c.trial_id)
        .where(TRIALS.c.study_id == study_id)
        .order_by(TRIALS.c.trial_id.desc())
        .limit(recent)
        .subquery()
    )
    query = (
        select(PARAMS.c.param_name, PARAMS.c.distribution_json)
        .where(PARAMS.c.trial_id.in_(select(newest.c.trial_id)))
        .order_by(PARAMS.c.trial_id)
    )
    return {name: dist for name, dist in session.execute(query)}
