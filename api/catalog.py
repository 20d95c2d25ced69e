"""The registered problems as the API lists them (imports ``tuner``, hence torch, on first use only).

No problem's data is loaded to list it (``tuner.problems.listing``); a plugin that is broken is listed with its
error and every other problem stays launchable.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from api.schemas import BrokenProblem, KnobInfo, ProblemInfo, ProblemList, StrategyInfo, TaskInfo

if TYPE_CHECKING:
    from tuner.problems import Listed

log = logging.getLogger("mtl_tune.api")


@lru_cache(maxsize=1)
def problems() -> ProblemList:
    """Built-in and plugin problems with their tasks, model knobs, default space and options schema, and the broken
    plugins (cached: the plugins are the operator's, fixed for the process's lifetime)."""
    from tuner.problems import listing

    found = listing()
    return ProblemList(
        problems=[_info(entry) for entry in found.problems],
        broken=[BrokenProblem(name=b.name, source=b.source, error=b.error) for b in found.broken],
    )


def _info(entry: Listed) -> ProblemInfo:
    from tuner.study import SearchSpace, default_space, task_infos

    cls = entry.cls
    # Without a preview (required options) an instance without options still has ``defaults`` and the knobs,
    # which is all the default space reads.
    problem = entry.preview if entry.preview is not None else object.__new__(cls)
    try:
        space = default_space(problem)
    except Exception:  # third-party code whose defaults need its options
        log.warning("problem %r: no default space without options", cls.name, exc_info=True)
        space = SearchSpace()
    return ProblemInfo(
        name=cls.name,
        description=cls.description,
        tasks=[TaskInfo.model_validate(t) for t in task_infos(entry.preview)] if entry.preview is not None else [],
        tasks_declared_by_options=entry.preview is None,
        model_knobs={name: _knob(knob) for name, knob in cls.model_knobs.items()},
        default_space=space.model_dump(mode="json"),
        options=cls.Options.model_json_schema(),
    )


@lru_cache(maxsize=1)
def strategies() -> list[StrategyInfo]:
    """Every registered strategy, ``equal`` first as in the default space, with its knobs."""
    from tuner.study import default_strategies
    from tuner.weighting import STRATEGIES, summary

    return [
        StrategyInfo(
            name=name,
            description=summary(STRATEGIES[name]),
            knobs={k: _knob(knob) for k, knob in STRATEGIES[name].knobs.items()},
            needs_grad_norms=STRATEGIES[name].needs_grad_norms,
        )
        for name in default_strategies()
    ]


def _knob(knob: Any) -> KnobInfo:
    choices = list(knob.choices) if knob.choices is not None else None
    return KnobInfo(default=knob.default, low=knob.low, high=knob.high, log=knob.log, choices=choices, help=knob.help)
