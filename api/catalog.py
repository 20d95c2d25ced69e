"""The registered problems as the API lists them (imports ``tuner``, hence torch, on first use only)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from api.schemas import ProblemInfo, TaskInfo

log = logging.getLogger("mtl_tune.api")


@lru_cache(maxsize=1)
def problems() -> tuple[ProblemInfo, ...]:
    """Built-in and plugin problems with their tasks, default space and options schema (cached: the registry is
    fixed for the process's lifetime)."""
    from tuner.problems import available_problems

    return tuple(_info(cls) for _, cls in sorted(available_problems().items()))


def _info(cls: Any) -> ProblemInfo:
    from tuner.study import SearchSpace, default_space

    try:
        problem = cls.create(None)
        tasks = [TaskInfo(name=t.name, kind=t.kind, metric=t.metric, direction=t.direction) for t in problem.tasks]
    except Exception:  # options without defaults (csv's data file), or a plugin's own failure: tasks come later
        problem, tasks = object.__new__(cls), []  # ``defaults`` needs no data; the default space reads only that
    try:
        space = default_space(problem)
    except Exception:  # third-party code whose defaults need its options
        log.warning("problem %r: no default space without options", cls.name, exc_info=True)
        space = SearchSpace()
    return ProblemInfo(
        name=cls.name,
        description=cls.description,
        tasks=tasks,
        default_space=space.model_dump(mode="json"),
        options=cls.Options.model_json_schema(),
    )
