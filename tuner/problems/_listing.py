"""What ``mtl-tune problems`` and ``GET /api/problems`` show, found without loading any data.

A problem is previewed with its default options; its ``load`` is replaced on that one instance by a function that
refuses, so tasks that can only be known from the data (csv) are reported as declared by the options instead of
being read. A plugin that fails to build with its defaults, or whose ``tasks`` raises, is listed as broken.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.problems._base import Problem
from tuner.problems._data import Dataset
from tuner.problems._registry import BrokenPlugin, registry
from tuner.problems._task import ProblemError


class _DataNeeded(Exception):
    """Raised by a preview's ``load``: these tasks are declared by the options or the data."""


@dataclass(frozen=True)
class Listed:
    """A working problem: ``preview`` is an instance with default options whose tasks are known without data, or
    ``None`` when they are declared by the options (required options, or tasks read from the data)."""

    cls: type[Problem]
    preview: Problem | None


@dataclass(frozen=True)
class Listing:
    problems: list[Listed]
    broken: list[BrokenPlugin]


def listing() -> Listing:
    """Every registered problem, by name, and every broken plugin; no problem's data is loaded."""
    reg = registry()
    listed, broken = [], list(reg.broken)
    for name, cls in sorted(reg.problems.items()):
        try:
            listed.append(Listed(cls, preview(cls)))
        except Exception as exc:  # third-party code failing with its own defaults: broken, the rest is listed
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            broken.append(BrokenPlugin(name, reg.sources[name], message))
    return Listing(listed, broken)


def preview(cls: type[Problem]) -> Problem | None:
    """``cls`` with its default options, its tasks read once; ``None`` when they depend on options or data."""
    if any(f.is_required() for f in cls.Options.model_fields.values()):
        return None
    try:
        problem = cls.create(None)
    except ProblemError:  # the defaults alone are refused: the options declare the problem
        return None
    # An instance attribute shadows the method for this preview only: ``tasks`` and ``dataset()`` reach ``load``
    # through ``self``, so whatever needs the data stops here instead of reading it.
    problem.load = _refuse_loading  # type: ignore[method-assign]
    try:
        problem.tasks  # noqa: B018 (evaluated for its failure: a plugin whose tasks raise is broken)
    except _DataNeeded:
        return None
    return problem


def _refuse_loading() -> Dataset:
    raise _DataNeeded
