"""The problem interface: what a built-in problem or a plugin provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from tuner.config import Chain
from tuner.limits import Limits
from tuner.problems._data import Dataset
from tuner.problems._task import ProblemError, Task

#: A model knob's value: what ``build_model`` receives for it.
KnobValue = int | float | str | bool
#: ``json_schema_extra`` of a problem option that counts samples: bounded by the operator's ``samples`` limit.
SAMPLES: dict[str, Any] = {"limit": "samples"}


def samples_help(split: str) -> str:
    """The description of a sample-count option, with its maximum."""
    return f"{split} samples; at most MTL_TUNE_MAX_SAMPLES ({Limits().samples} unless the operator sets it)"


@dataclass(frozen=True)
class Knob:
    """One of a model's own knobs (width, dropout, ...): its default and, optionally, its default search range.

    ``low``/``high`` make it a searched number (an integer when the default is an int; log-uniform when ``log``);
    ``choices`` a categorical one; neither keeps it fixed at ``default`` unless a study's space searches it.
    A knob that sizes memory or time names the operator's limit that bounds it (``limit``: ``width`` or ``depth``,
    see ``tuner.limits``) and may set a ``maximum`` of its own; a study's space is checked against both at launch.
    """

    default: KnobValue
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[KnobValue, ...] | None = None
    help: str = ""
    limit: str | None = None
    maximum: float | None = None

    @property
    def searched(self) -> bool:
        return self.choices is not None or (self.low is not None and self.high is not None)


def knob_values(knobs: Mapping[str, Knob], given: Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """Every knob's value, ``given`` over the defaults; and the first name ``given`` has that ``knobs`` lacks."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(knobs))
    return (unknown[0] if unknown else None), {name: given.get(name, knob.default) for name, knob in knobs.items()}


@dataclass(frozen=True)
class Defaults:
    """A problem's default training configuration (the study baseline uses these).

    ``chain`` is the (source, target) pair that suits task chaining on this problem; a run chains only when its
    configuration names a chain, so this is what a study offers, not what training does by default.
    """

    lr_shared: float = 1e-3
    lr_heads: float = 1e-3
    lr_weighting: float = 1e-2
    batch_size: int = 64
    epochs: int = 20
    chain: tuple[str, str] | None = None


class ProblemOptions(BaseModel):
    """Options a problem accepts (``--tasks``, sizes, data files); subclasses add fields."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0


@dataclass(frozen=True)
class ParameterGroups:
    """Which parameters are shared and which belong to each task (each group gets its own learning rate)."""

    shared: list[nn.Parameter]
    tasks: dict[str, list[nn.Parameter]]


@dataclass
class Problem(ABC):
    """A multi-task problem: its tasks, its data and its model.

    A subclass sets ``name`` (the registry key), optionally ``description``, ``Options`` (a ``ProblemOptions``
    subclass: the keyword options ``create`` validates) and ``model_knobs``, and implements:

    - ``tasks``: the list of ``Task`` (name, loss, metric and the metric's direction);
    - ``load()``: a ``Dataset`` (train, validation and optionally test), deterministic for ``options.seed``; each
      split is in-memory ``Split`` tensors or any iterable of ``(inputs, targets)`` batches (a ``DataLoader``);
    - ``build_model(knobs, chain)``: the ``nn.Module`` whose ``forward(inputs)`` returns a mapping from task name to
      that task's prediction. ``knobs`` holds every model knob's value; ``chain`` is the run's chain (or ``None``):
      the target reads ``chain.feed(feature)``, which stops the gradient for ``detach``.

    By default the model's parameters are grouped by convention: ``model.shared`` is the shared part and
    ``model.heads[task]`` each task's own (an ``nn.ModuleDict``); override ``parameter_groups`` for any other layout.
    GradNorm balances gradients on ``last_shared_layer(model)``: by default the last module, in registration
    order, of ``model.shared`` that holds parameters; override it when that is not the last one computed.

    ``defaults`` may override the default training configuration; ``__post_init__`` may validate the options
    further (call ``super().__post_init__()`` first). Raise ``ProblemError`` for bad options or data.

    Third-party problems register in their package metadata under the ``mtl_tune.problems`` entry-point group,
    pointing at the subclass, e.g. in ``pyproject.toml``::

        [project.entry-points."mtl_tune.problems"]
        my-problem = "my_package.problems:MyProblem"
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[ProblemOptions]] = ProblemOptions
    #: The model's own knobs: what ``build_model`` receives, with defaults and default search ranges.
    model_knobs: ClassVar[Mapping[str, Knob]] = {}

    options: ProblemOptions = field(default_factory=ProblemOptions)
    _dataset: Dataset | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # create() has validated already; direct construction (``GradNormToy()``) gets its own options type here.
        if not isinstance(self.options, self.Options):
            self.options = self.parse_options(self.options.model_dump())

    @classmethod
    def create(cls, options: Mapping[str, Any] | None = None) -> Problem:
        """Build the problem from keyword options (as the CLI and the study layer pass them)."""
        return cls(options=cls.parse_options(options))

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None) -> ProblemOptions:
        try:
            return cls.Options.model_validate(dict(options or {}))
        except ValidationError as exc:
            raise ProblemError(f"problem {cls.name!r}: {_first_error(exc)}") from None

    @property
    @abstractmethod
    def tasks(self) -> list[Task]: ...

    @abstractmethod
    def load(self) -> Dataset:
        """Build or read the data, deterministically for ``options.seed``."""

    @abstractmethod
    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        """The model for one run; ``forward(inputs)`` returns ``{task name: prediction}``."""

    def dataset(self) -> Dataset:
        """``load()`` once per problem instance: a worker trains many trials on the same data."""
        if self._dataset is None:
            self._dataset = self.load()
        return self._dataset

    @property
    def defaults(self) -> Defaults:
        return Defaults()

    @property
    def chains(self) -> tuple[tuple[str, str], ...]:
        """The (source, target) chains this problem's model supports; by default the one in ``defaults``."""
        chain = self.defaults.chain
        return (chain,) if chain else ()

    def parameter_groups(self, model: nn.Module) -> ParameterGroups:
        """``model.shared`` and ``model.heads[task]`` by default; override for another layout."""
        shared, heads = getattr(model, "shared", None), getattr(model, "heads", None)
        if not isinstance(shared, nn.Module) or not isinstance(heads, nn.ModuleDict):
            raise ProblemError(
                f"problem {self.name!r}: its model has no `shared` module and `heads` ModuleDict; "
                "override Problem.parameter_groups(model) to say which parameters are shared and which are each task's"
            )
        return ParameterGroups(
            shared=list(shared.parameters()),
            tasks={t: list(heads[t].parameters()) if t in heads else [] for t in self.task_names},
        )

    def last_shared_layer(self, model: nn.Module) -> nn.Module:
        """The layer whose per-task gradients GradNorm balances: any module with parameters."""
        shared = getattr(model, "shared", None)
        if isinstance(shared, nn.Module):
            with_params = [m for m in shared.modules() if any(True for _ in m.parameters(recurse=False))]
            if with_params:
                return with_params[-1]
        raise ProblemError(
            f"problem {self.name!r}: no last shared layer found; override Problem.last_shared_layer(model)"
        )

    def knob_values(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every model knob's value: ``given`` over the defaults; unknown names are refused."""
        unknown, values = knob_values(self.model_knobs, given)
        if unknown:
            known = ", ".join(self.model_knobs) or "none"
            raise ProblemError(f"model.{unknown}: unknown model knob of problem {self.name!r}; knobs: {known}")
        return values

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ProblemError(f"problem {self.name!r} has no task {name!r}; tasks: {self.task_names}")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


def check_groups(model: nn.Module, groups: ParameterGroups, tasks: Sequence[str]) -> None:
    """Every trainable parameter in exactly one group; a parameter in none, or in two, is named."""
    missing = sorted(set(groups.tasks) ^ set(tasks))
    if missing:
        raise ProblemError(f"parameter groups: tasks {missing} do not match the problem's tasks {list(tasks)}")
    owner: dict[int, str] = {}
    for group, params in [("shared", groups.shared), *((f"head:{t}", p) for t, p in groups.tasks.items())]:
        for p in params:
            if id(p) in owner:
                raise ProblemError(f"parameter {_name(model, p)!r} is in two groups: {owner[id(p)]} and {group}")
            owner[id(p)] = group
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in owner:
            raise ProblemError(f"parameter {name!r} is in no group (neither shared nor any task's)")


def _name(model: nn.Module, param: nn.Parameter) -> str:
    return next((n for n, p in model.named_parameters() if p is param), "<not in the model>")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "options"
    return f"{where}: {err['msg']}"
