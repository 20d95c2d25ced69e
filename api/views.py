"""Storage rows into response models: study summaries and details, trial rows, per-epoch curves.

Facts that never change once known (a study's Optuna id, its tasks, its baseline trial) are cached per job; a
Pareto front is cached until the study's count of complete trials changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

import storage
from api.cache import JobKey, Lru, job_key
from api.pareto import Front, extend
from api.schemas import (
    Comparison,
    EpochRow,
    EpochTaskMetrics,
    StudyDetail,
    StudySummary,
    TaskInfo,
    TaskMetrics,
    TrialCounts,
    TrialRow,
)
from storage import EpochMetric, StudyJob, TrialSummary
from storage import queries as q
from storage.queries import finite

BASELINE_ATTR = storage.BASELINE_ATTR

_study_ids: Lru[JobKey, int] = Lru()
_task_lists: Lru[JobKey, list[TaskInfo]] = Lru()
_baselines: Lru[JobKey, int] = Lru()
_fronts: Lru[JobKey, Front] = Lru(64)


def summary_of(job: StudyJob, *, counts: dict[str, int], best_value: float | None) -> StudySummary:
    return StudySummary(
        name=job.study_name, problem=job.problem, problem_options=job.problem_options, objective=job.objective,
        directions=list(job.directions), status=job.status, sampler=job.sampler, pruner=job.pruner,
        epochs=job.epochs, n_trials=job.n_trials, trials=TrialCounts.model_validate(counts),
        best_value=finite(best_value), created_at=job.created_at, updated_at=job.updated_at,
        last_error=job.last_error,
    )  # fmt: skip


def study_summaries(session: Session) -> list[StudySummary]:
    """Every study, newest first: one grouped count over the claims index, one index probe per scalar study."""
    jobs = storage.list_jobs(session)
    counts = q.claim_counts_by_job(session)
    return [summary_of(job, counts=counts.get(job.id, {}), best_value=_best_value(session, job)) for job in jobs]


def study_summary(session: Session, job: StudyJob) -> StudySummary:
    counts = q.claim_counts_by_job(session, job_ids=[job.id]).get(job.id, {})
    return summary_of(job, counts=counts, best_value=_best_value(session, job))


def _best_value(session: Session, job: StudyJob) -> float | None:
    if job.objective != "scalar":
        return None
    best = q.best_trial(session, job=job)
    return best.objective if best is not None else None


def study_detail(session: Session, job: StudyJob) -> StudyDetail:
    counts = q.claim_counts_by_job(session, job_ids=[job.id]).get(job.id, {})
    baseline_number = baseline_of(session, job)
    best = _best_rows(session, job)
    baseline = q.summary(session, job_id=job.id, number=baseline_number) if baseline_number is not None else None
    tasks = study_tasks(session, job)
    best_rows = [trial_row(row, baseline_number=baseline_number) for row in best]
    scalar_best = best[0] if job.objective != "pareto" and best else None
    compared = {}
    if baseline is not None and scalar_best is not None:
        metrics = {t.name: (t.metric, t.direction) for t in tasks}
        compared = comparison(baseline.task_metrics, scalar_best.task_metrics, metrics)
    return StudyDetail(
        **summary_of(job, counts=counts, best_value=scalar_best.objective if scalar_best else None).model_dump(),
        space=job.space,
        tasks=tasks,
        best=best_rows,
        baseline=trial_row(baseline, baseline_number=baseline_number) if baseline is not None else None,
        comparison={task: Comparison.model_validate(c) for task, c in compared.items()},
        confirm_seeds=job.confirm_seeds,
    )


def trial_row(row: TrialSummary, *, baseline_number: int | None) -> TrialRow:
    return TrialRow(
        number=row.trial_number, state=row.state, values=values_of(row.values), objective=finite(row.objective),
        params=row.params or {}, tasks=task_metrics(row.task_metrics), duration_s=finite(row.duration_s),
        started_at=row.started_at, finished_at=row.finished_at, baseline=row.trial_number == baseline_number,
    )  # fmt: skip


def trial_rows(session: Session, job: StudyJob, rows: list[TrialSummary]) -> list[TrialRow]:
    baseline_number = baseline_of(session, job)
    return [trial_row(row, baseline_number=baseline_number) for row in rows]


def epoch_rows(rows: list[EpochMetric]) -> list[EpochRow]:
    epochs: dict[int, EpochRow] = {}
    for r in rows:
        epoch = epochs.setdefault(r.epoch, EpochRow(epoch=r.epoch, tasks={}))
        named = series_of(r.series)
        epoch.tasks[r.task] = EpochTaskMetrics(
            train_loss=finite(r.train_loss), val_loss=finite(r.val_loss), metric=finite(r.metric),
            weight=finite(r.weight), sigma=named.get("sigma"), grad_norm=named.get("grad_norm"), series=named,
        )  # fmt: skip
    return list(epochs.values())


def series_of(stored: Any) -> dict[str, float | None]:
    """A stored ``{name: value}`` of a strategy's series, every value a finite number or null."""
    if not isinstance(stored, dict):
        return {}
    return {str(name): finite(value) for name, value in stored.items()}


def study_id(session: Session, job: StudyJob) -> int | None:
    key = job_key(session, job)
    found = _study_ids.get(key)
    if found is None:
        found = q.optuna_study_id(session, study_name=job.study_name)
        if found is not None:
            _study_ids.put(key, found)
    return found


def history_item(number: int, state: str, objective: float | None, values: Any) -> dict[str, Any]:
    """One compact history entry; without stored ``values`` (scalar studies) they are ``[objective]``."""
    objective = finite(objective)
    if values is None and objective is not None:
        values = [objective]
    return {"number": number, "state": state, "objective": objective, "values": values_of(values)}


def values_of(values: list[Any] | None) -> list[float | None] | None:
    return None if values is None else [finite(v) for v in values]


def study_tasks(session: Session, job: StudyJob) -> list[TaskInfo]:
    """The study's tasks as recorded at launch: name, kind, metric and the direction the task declared."""
    key = job_key(session, job)
    tasks = _task_lists.get(key)
    if tasks is None:
        sid = study_id(session, job)
        tasks = [TaskInfo.model_validate(t) for t in q.study_tasks(session, study_id=sid)] if sid is not None else []
        if tasks:
            _task_lists.put(key, tasks)
    return tasks


def task_metrics(tasks: dict[str, Any] | None) -> dict[str, TaskMetrics]:
    return {
        name: TaskMetrics(
            **{k: finite(numbers.get(k)) for k in ("val_loss", "metric", "weight", "sigma")},
            series=series_of(numbers.get("series")),
        )
        for name, numbers in (tasks or {}).items()
        if isinstance(numbers, dict)
    }


def baseline_of(session: Session, job: StudyJob) -> int | None:
    """Trial 0 is the baseline (enqueued at creation); only when it had to be retried is Optuna asked which."""
    key = job_key(session, job)
    cached = _baselines.get(key)
    if cached is not None:
        return cached
    zero = q.summary(session, job_id=job.id, number=0)
    number: int | None = 0 if zero is not None and zero.state == "complete" else None
    if number is None:
        sid = study_id(session, job)
        number = q.baseline_number(session, study_id=sid, attr=BASELINE_ATTR) if sid is not None else None
    if number is not None:
        _baselines.put(key, number)
    return number


def _best_rows(session: Session, job: StudyJob) -> list[TrialSummary]:
    if job.objective != "pareto":
        best = q.best_trial(session, job=job)
        return [best] if best is not None else []
    front = _pareto_front(session, job)
    return q.summaries(session, job_id=job.id, numbers=front.numbers) if front.members else []


def _pareto_front(session: Session, job: StudyJob) -> Front:
    """The cached front, extended by the trials completed since (a full pass only when counts disagree)."""
    key = job_key(session, job)
    complete = q.count_trials(session, job_id=job.id, state="complete")
    front = _fronts.get(key)
    if front is not None and front.complete == complete:
        return front
    rows = q.complete_values(session, job_id=job.id, after_id=front.last_id if front is not None else 0)
    if front is not None and front.complete + len(rows) != complete:  # a summary was rewritten or removed
        front, rows = None, q.complete_values(session, job_id=job.id)
    front = extend(front, rows, list(job.directions))
    _fronts.put(key, front)
    return front


def as_utc(value: datetime | None) -> datetime | None:
    """Optuna hands out naive local times; responses carry UTC."""
    if value is None:
        return None
    return value.astimezone(UTC)


def comparison(
    baseline: Mapping[str, Any] | None, best: Mapping[str, Any] | None, metrics: Mapping[str, tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """Per task of the baseline: its and the best trial's validation metric (from a trial's ``tasks``, ``{task:
    {"metric": ...}}``; not finite: None), the relative change, the metric's name and direction as the study recorded
    them (``metrics``; None for a task it lacks) and whether the best is better by that direction (None when equal or
    unknown)."""
    out = {}
    for task, numbers in (baseline or {}).items():
        before, after = finite((numbers or {}).get("metric")), finite(((best or {}).get(task) or {}).get("metric"))
        metric, direction = metrics.get(task, ("metric", None))
        change = better = None
        if before is not None and after is not None:
            change = (after - before) / abs(before) if before != 0 else None
            better = None if after == before or direction is None else (after > before) == (direction == "maximize")
        out[task] = dict(metric=metric, direction=direction, baseline=before, best=after, change=change, better=better)
    return out
