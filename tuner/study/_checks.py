"""Launch checks that need the problem and the resolved space: the operator's limits and task names the database
can hold. Both refuse with a ``LimitError`` naming the request's field."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String

import storage
from tuner.limits import LimitError, Limits
from tuner.problems import Problem
from tuner.study._space import Range, SearchSpace
from tuner.study._spec import StudySpec


def task_name_length() -> int:
    """The longest task name the study database stores (its per-epoch metrics' ``task`` column)."""
    column = storage.EpochMetric.__table__.c.task.type
    assert isinstance(column, String) and column.length
    return column.length


def check_limits(spec: StudySpec, problem: Problem, space: SearchSpace, epochs: int, limits: Limits) -> None:
    limits.check(("n_trials",), "trials", spec.n_trials)
    limits.check(("epochs",), "epochs", epochs)
    options = problem.options
    for name, info in type(options).model_fields.items():
        extra = info.json_schema_extra
        kind = extra.get("limit") if isinstance(extra, dict) else None
        if isinstance(kind, str):
            limits.check(("problem_options", name), kind, getattr(options, name))
    for size in _values(space.batch_size, problem.defaults.batch_size):  # the default: the baseline's
        limits.check(("space", "batch_size"), "batch_size", size)
    for name, knob in problem.model_knobs.items():
        where = ("space", "model", name)
        for value in _values((space.model or {}).get(name, knob.default), knob.default):
            if knob.limit is not None:
                limits.check(where, knob.limit, value)
            if knob.maximum is not None and value > knob.maximum:
                limit = f"the maximum of {knob.maximum:g} for problem {problem.name!r}"
                raise LimitError(where, f"{value:g} exceeds {limit}")


def check_task_names(problem: Problem) -> None:
    """One rule on every backend: a task name fits the database's column, so no metric of it is ever lost."""
    longest = task_name_length()
    where = ("problem_options", "target") if "target" in type(problem.options).model_fields else ("problem",)
    for task in problem.tasks:
        if len(task.name) > longest:
            raise LimitError(
                where, f"task name {task.name[:40]!r}... has {len(task.name)} characters; at most {longest} are stored"
            )


def _values(*knobs: Any) -> list[float]:
    """The largest numbers knobs can take: a range's high end, every numeric choice, or a fixed value."""
    out: list[float] = []
    for knob in knobs:
        for item in knob if isinstance(knob, list) else [knob]:
            if isinstance(item, Range):
                out.append(item.high)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                out.append(item)
    return out
