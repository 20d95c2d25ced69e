"""Built-in problems, the problem interface and the registry (with ``mtl_tune.problems`` entry-point plugins)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from tuner.problems._base import Defaults, Knob, ParameterGroups, Problem, ProblemOptions, check_groups
from tuner.problems._csv import CsvProblem
from tuner.problems._data import Batch, Dataset, Split, SplitLike, iterate, tree_map
from tuner.problems._digits import MultiDigits
from tuner.problems._metrics import METRIC_PRESETS, Direction, Metric
from tuner.problems._sharing import SharedBottom, mlp
from tuner.problems._task import LOSSES, Masked, ProblemError, Task
from tuner.problems._toys import GradNormToy, UncertaintyToy

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOSSES",
    "METRIC_PRESETS",
    "Batch",
    "Dataset",
    "Defaults",
    "Direction",
    "Knob",
    "Masked",
    "Metric",
    "ParameterGroups",
    "Problem",
    "ProblemError",
    "ProblemOptions",
    "SharedBottom",
    "Split",
    "SplitLike",
    "Task",
    "available_problems",
    "check_groups",
    "create_problem",
    "iterate",
    "mlp",
    "tree_map",
]

ENTRY_POINT_GROUP = "mtl_tune.problems"
_BUILTIN: dict[str, type[Problem]] = {cls.name: cls for cls in (GradNormToy, UncertaintyToy, MultiDigits, CsvProblem)}


def available_problems() -> dict[str, type[Problem]]:
    """Built-in problems plus the ones installed packages register under ``mtl_tune.problems``.

    A plugin is keyed by its class's ``name``; a plugin cannot replace a built-in problem of the same name.
    """
    problems = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = _load_plugin(ep)
        problems.setdefault(cls.name, cls)
    return problems


def _load_plugin(ep: EntryPoint) -> type[Problem]:
    try:
        cls = ep.load()
    except Exception as exc:  # third-party code: any failure becomes one readable error naming the plugin
        raise ProblemError(f"problem plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise ProblemError(f"problem plugin {ep.name!r} ({ep.value}) is not a tuner.problems.Problem subclass")
    if not isinstance(getattr(cls, "name", None), str):
        raise ProblemError(f"problem plugin {ep.name!r} ({ep.value}) does not set the class attribute 'name'")
    return cls


def create_problem(name: str, options: Mapping[str, Any] | None = None) -> Problem:
    """Build a registered problem by name; only registered names are accepted."""
    problems = available_problems()
    if name not in problems:
        raise ProblemError(f"unknown problem {name!r}; available: {', '.join(sorted(problems))}")
    return problems[name].create(options)
