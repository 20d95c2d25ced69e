"""The problem interface: what a built-in problem or a plugin provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn
from torch.nn import functional as F

TaskKind = Literal["regression", "classification"]
Direction = Literal["minimize", "maximize"]
#: Metrics a task can report: accuracy for classification; rmse or mse (in the user's units) for regression.
METRICS: dict[TaskKind, tuple[str, ...]] = {"classification": ("accuracy",), "regression": ("rmse", "mse")}


class ProblemError(ValueError):
    """Bad problem options or data; the message names the problem and the offending field."""


@dataclass(frozen=True)
class Task:
    """One task of a multi-task problem.

    ``kind`` decides the loss (cross-entropy or mean squared error) and the metric: ``accuracy`` (maximised) for
    classification, ``rmse`` (default) or ``mse`` (minimised) for regression. ``out_dim`` is the size of the head's
    output (classes for classification). ``metric_scale`` converts a regression metric from the standardised
    training units back to the user's units.
    """

    name: str
    kind: TaskKind
    out_dim: int = 1
    metric: str = ""
    metric_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in METRICS:
            raise ProblemError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(METRICS)}")
        if not self.metric:
            object.__setattr__(self, "metric", METRICS[self.kind][0])
        if self.metric not in METRICS[self.kind]:
            raise ProblemError(
                f"task {self.name!r}: metric {self.metric!r} does not suit a {self.kind} task; "
                f"expected one of {', '.join(METRICS[self.kind])}"
            )

    @property
    def direction(self) -> Direction:
        return "maximize" if self.metric == "accuracy" else "minimize"

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.kind == "classification":
            return F.cross_entropy(pred, target)
        return F.mse_loss(pred, target)

    def metric_value(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.kind == "classification":
            return (pred.argmax(dim=-1) == target).float().mean()
        mse = F.mse_loss(pred, target)
        return mse * self.metric_scale**2 if self.metric == "mse" else mse.sqrt() * self.metric_scale

    def prediction_feature(self, pred: Tensor) -> Tensor:
        """What a chained task receives from this task: class probabilities or the regression estimate."""
        return pred.softmax(dim=-1) if self.kind == "classification" else pred


@dataclass
class Split:
    """Inputs and per-task targets of one split, held as tensors."""

    x: Tensor
    y: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.x.to(device), {k: v.to(device) for k, v in self.y.items()})


@dataclass
class Dataset:
    train: Split
    val: Split


class Trunk(nn.Module):
    """The shared part of the network.

    It ends in one ``last`` linear layer followed by ``activation`` (elementwise, ReLU by default): that layer is
    the "last shared layer" whose per-task gradients GradNorm balances, so a trunk always exposes it.
    """

    def __init__(self, body: nn.Module, last: nn.Linear, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.last = last
        self.activation = activation if activation is not None else nn.ReLU()

    @property
    def out_dim(self) -> int:
        return self.last.out_features

    def activation_slope(self, pre: Tensor, out: Tensor) -> Tensor:
        """The activation's derivative at ``pre`` (``out`` = activation(pre)), elementwise and detached."""
        if isinstance(self.activation, nn.ReLU):
            # A comparison needs no autograd pass; as floats, multiplying by it skips a dtype conversion.
            return (out > 0).to(out.dtype)
        # Elementwise, so the gradient of sum(activation(p)) is the derivative at every point.
        with torch.enable_grad():
            point = pre.detach().requires_grad_()
            (slope,) = torch.autograd.grad(self.activation(point).sum(), point)
        return slope


def mlp_trunk(in_dim: int, hidden: int, depth: int) -> Trunk:
    """``depth`` ReLU layers of width ``hidden``."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return Trunk(nn.Sequential(*layers), nn.Linear(width, hidden))


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
    hidden: int = 64
    depth: int = 2
    chain: tuple[str, str] | None = None


class ProblemOptions(BaseModel):
    """Options a problem accepts (``--tasks``, sizes, data files); subclasses add fields."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0


@dataclass
class Problem(ABC):
    """A multi-task problem: its tasks, its data and the trunk that suits it.

    A subclass sets ``name`` (the registry key), optionally ``description`` and ``Options`` (a ``ProblemOptions``
    subclass: the keyword options ``create`` validates), and implements:

    - ``tasks``: the list of ``Task`` (name, kind, loss, metric and the metric's direction);
    - ``load()``: a ``Dataset`` of tensors (train and validation ``Split``), deterministic for ``options.seed``;
    - ``build_trunk(hidden, depth)``: the shared ``Trunk``, which ends in the last shared linear layer.

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

    def dataset(self) -> Dataset:
        """``load()`` once per problem instance: a worker trains many trials on the same data."""
        if self._dataset is None:
            self._dataset = self.load()
        return self._dataset

    @abstractmethod
    def build_trunk(self, hidden: int, depth: int) -> Trunk: ...

    @property
    def defaults(self) -> Defaults:
        return Defaults()

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ProblemError(f"problem {self.name!r} has no task {name!r}; tasks: {self.task_names}")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "options"
    return f"{where}: {err['msg']}"
