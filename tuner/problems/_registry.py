"""The problem registry: built-in problems, installed plugins and the operator's own plugin modules.

Plugins come from two places, both trusted by whoever runs the process (a REST request never names a module):

- installed packages, through the ``mtl_tune.problems`` entry-point group (each entry point names a ``Problem``
  subclass);
- modules the operator names with ``mtl-tune --plugin MODULE`` or ``MTL_TUNE_PLUGINS`` (module names separated by
  commas or ``os.pathsep``); such a module registers its ``PROBLEMS`` list when it has one, otherwise every
  ``Problem`` subclass it defines that sets ``name``.

Discovery never breaks: a plugin that fails to import, is not a usable ``Problem`` subclass or takes a name already
registered is recorded as broken, with its error, and every other problem stays available.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from tuner.problems._base import Problem
from tuner.problems._csv import CsvProblem
from tuner.problems._digits import MultiDigits
from tuner.problems._task import ProblemError
from tuner.problems._toys import GradNormToy, UncertaintyToy

ENTRY_POINT_GROUP = "mtl_tune.problems"
PLUGINS_ENV = "MTL_TUNE_PLUGINS"
BUILT_IN = "built-in"
BUILTIN: tuple[type[Problem], ...] = (GradNormToy, UncertaintyToy, MultiDigits, CsvProblem)


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be registered or listed.

    ``name`` is the problem's name when it is known, else the entry point's or the module's; ``source`` says where
    the plugin comes from and ``error`` what went wrong.
    """

    name: str
    source: str
    error: str

    @property
    def message(self) -> str:
        return f"problem plugin {self.name!r} ({self.source}) is broken: {self.error}"


@dataclass
class Registry:
    """The working problems by name, and the plugins that are broken."""

    problems: dict[str, type[Problem]] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    #: Where each working problem comes from: ``built-in``, ``entry point ...`` or ``module ...``.
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, obj: object, *, name: str, source: str) -> None:
        """Register ``obj`` as a problem class, or record why it cannot be one."""
        error = _unusable(obj)
        if error is not None:
            self.broken.append(BrokenPlugin(name, source, error))
            return
        assert isinstance(obj, type) and issubclass(obj, Problem)
        taken = self.problems.get(obj.name)
        if taken is not None and taken is not obj:  # the same class twice (entry point and module) is no conflict
            owner = f"{taken.__module__}.{taken.__qualname__}"
            self.broken.append(BrokenPlugin(obj.name, source, f"the name {obj.name!r} is already taken by {owner}"))
            return
        self.problems[obj.name] = obj
        self.sources[obj.name] = source

    def broken_named(self, name: str) -> BrokenPlugin | None:
        return next((b for b in self.broken if b.name == name), None)


def registry() -> Registry:
    """Built-in problems, then entry-point plugins, then the operator's plugin modules (read afresh each call)."""
    reg = Registry()
    for cls in BUILTIN:
        reg.add(cls, name=cls.name, source=BUILT_IN)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        source = f"entry point {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:  # third-party code: any failure is recorded, never raised
            reg.broken.append(BrokenPlugin(ep.name, source, f"failed to load: {_describe(exc)}"))
            continue
        reg.add(obj, name=_problem_name(obj) or ep.name, source=source)
    for module in plugin_modules():
        _add_module(reg, module)
    return reg


def _add_module(reg: Registry, module_name: str) -> None:
    source = f"module {module_name}"
    try:
        module = import_module(module_name)
    except Exception as exc:  # the operator's module: its failure is recorded, never raised
        reg.broken.append(BrokenPlugin(module_name, source, f"failed to import: {_describe(exc)}"))
        return
    listed = getattr(module, "PROBLEMS", None)
    if listed is not None:
        found = list(listed) if isinstance(listed, list | tuple) else [listed]
    else:
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Problem) and obj.__module__ == module.__name__
            if _problem_name(obj)
        ]
    if not found:
        reg.broken.append(BrokenPlugin(module_name, source, "defines no Problem subclass that sets `name`"))
    for obj in found:
        reg.add(obj, name=_problem_name(obj) or module_name, source=source)


def _unusable(obj: object) -> str | None:
    """Why ``obj`` cannot be registered as a problem, or ``None``."""
    if not (isinstance(obj, type) and issubclass(obj, Problem)):
        return "not a tuner.problems.Problem subclass"
    if not _problem_name(obj):
        return "does not set the class attribute 'name'"
    if inspect.isabstract(obj):
        return f"does not implement {', '.join(sorted(obj.__abstractmethods__))}"
    return None


def _problem_name(obj: object) -> str | None:
    name = getattr(obj, "name", None) if isinstance(obj, type) else None
    return name if isinstance(name, str) and name else None


def _describe(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the plugin's message


def plugin_modules() -> list[str]:
    """The operator's plugin modules named in ``MTL_TUNE_PLUGINS``, in order, without repeats."""
    names = re.split(f"[,{re.escape(os.pathsep)}]", os.environ.get(PLUGINS_ENV, ""))
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


def use_plugins(modules: Iterable[str]) -> None:
    """Add operator-trusted plugin modules for this process and every process it starts (the workers of ``serve``
    and ``study run`` inherit ``MTL_TUNE_PLUGINS``). Nothing is imported yet: a broken module is listed, later."""
    os.environ[PLUGINS_ENV] = ",".join(dict.fromkeys([*plugin_modules(), *modules]))


def available_problems() -> dict[str, type[Problem]]:
    """The working problems: built-in, entry-point plugins and the operator's modules. Never raises for a broken
    plugin (see ``broken_problems``); a plugin cannot replace a problem registered before it under the same name."""
    return registry().problems


def broken_problems() -> list[BrokenPlugin]:
    """The plugins that could not be registered, each with its error."""
    return registry().broken


def create_problem(name: str, options: Mapping[str, Any] | None = None) -> Problem:
    """Build a registered problem by name; only registered names are accepted.

    A broken plugin's name raises its error; a plugin that fails to build, or to tell its tasks, raises one
    ``ProblemError`` naming it (its own ``ProblemError`` about an option passes through as it is).
    """
    reg = registry()
    if name not in reg.problems:
        broken = reg.broken_named(name)
        if broken is not None:
            raise ProblemError(broken.message)
        raise ProblemError(f"unknown problem {name!r}; available: {', '.join(sorted(reg.problems))}")
    cls, source = reg.problems[name], reg.sources[name]
    if source == BUILT_IN:
        return cls.create(options)
    try:
        problem = cls.create(options)
        problem.tasks  # noqa: B018 (read now: its failure is the plugin's, named here, not a crash later)
    except ProblemError:
        raise
    except Exception as exc:
        raise ProblemError(f"problem plugin {name!r} ({source}) failed: {_describe(exc)}") from exc
    return problem
