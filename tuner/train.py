"""The training loop: one configuration of one problem, with per-epoch reports for the study layer.

Reads top to bottom: resolve the configuration against the problem's defaults, build model, strategy and
optimizer, measure the untrained validation losses (the objective's reference), then train epoch by epoch.
``train_step`` is the one step the loop repeats; the benchmark times exactly that function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tuner.config import ConfigError, TrainConfig
from tuner.device import resolve_device
from tuner.model import MultiTaskModel
from tuner.optim import build_optimizer
from tuner.problems import Problem, Split
from tuner.weighting import WeightingStrategy, build_strategy

EVAL_BATCH = 2048


class NonFiniteLossError(RuntimeError):
    """A task's loss became NaN or infinite; training stops."""

    def __init__(self, task: str, epoch: int, split: str) -> None:
        super().__init__(f"non-finite {split} loss for task {task!r} at epoch {epoch}")
        self.task, self.epoch, self.split = task, epoch, split


@dataclass
class TaskEpoch:
    """One task's numbers after an epoch: mean training loss, validation loss and metric, current loss weight;
    ``sigma`` for the uncertainty strategies, the epoch's mean GradNorm ``grad_norm`` and its target for GradNorm."""

    train_loss: float
    val_loss: float
    metric: float
    weight: float
    sigma: float | None = None
    grad_norm: float | None = None
    grad_norm_target: float | None = None


@dataclass
class EpochReport:
    """One epoch's numbers, per task; ``objective`` is mean_i val_loss_i / reference_i."""

    epoch: int
    tasks: dict[str, TaskEpoch]
    objective: float


EpochCallback = Callable[[EpochReport], None]


@dataclass
class TrainResult:
    """The resolved configuration, the untrained validation losses (``reference``), every epoch's report and the
    trained model."""

    problem: str
    config: TrainConfig
    device: str
    reference: dict[str, float]
    history: list[EpochReport] = field(default_factory=list)
    model: MultiTaskModel | None = field(default=None, repr=False, compare=False)

    @property
    def final(self) -> EpochReport:
        return self.history[-1]

    @property
    def objective(self) -> float:
        return self.final.objective

    def to_json(self) -> dict[str, Any]:
        tasks = self.final.tasks
        out: dict[str, Any] = {
            "problem": self.problem,
            "config": self.config.model_dump(mode="json"),
            "tasks": {name: {"val_loss": t.val_loss, "metric": t.metric} for name, t in tasks.items()},
            "loss_weights": {name: t.weight for name, t in tasks.items()},
            "objective": self.objective,
        }
        if any(t.sigma is not None for t in tasks.values()):
            out["sigma"] = {name: t.sigma for name, t in tasks.items()}
        return out


def resolve_config(problem: Problem, config: TrainConfig) -> TrainConfig:
    """Fill every ``None`` with the problem's default and check the task names the configuration uses."""
    d = problem.defaults
    filled = config.model_copy(
        update={
            "lr_shared": d.lr_shared if config.lr_shared is None else config.lr_shared,
            "lr_heads": d.lr_heads if config.lr_heads is None else config.lr_heads,
            "lr_weighting": d.lr_weighting if config.lr_weighting is None else config.lr_weighting,
            "batch_size": config.batch_size or d.batch_size,
            "epochs": config.epochs or d.epochs,
            "hidden": config.hidden or d.hidden,
            "depth": config.depth or d.depth,
        }
    )
    names = problem.task_names
    for where, used in (("lr_head", filled.lr_head), ("weights", filled.weights or {})):
        unknown = sorted(set(used) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown task {unknown[0]!r}; tasks of {problem.name!r}: {names}")
    return filled


def build(
    problem: Problem, config: TrainConfig, device: torch.device
) -> tuple[MultiTaskModel, WeightingStrategy, torch.optim.Optimizer]:
    """Model, strategy and optimizer for a resolved ``config`` (see ``resolve_config``), seeded by ``config.seed``."""
    assert config.hidden and config.depth
    torch.manual_seed(config.seed)
    model = MultiTaskModel(problem.tasks, problem.build_trunk(config.hidden, config.depth), config.chain).to(device)
    strategy = build_strategy(problem.tasks, config).to(device)
    return model, strategy, build_optimizer(model, strategy, config)


def train_step(
    model: MultiTaskModel,
    strategy: WeightingStrategy,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    targets: Sequence[Tensor],
    autocast: AbstractContextManager[Any] | None = None,
) -> Tensor:
    """One optimisation step on one batch; returns the per-task losses (shape T, detached, still on the device)."""
    with autocast or nullcontext():
        fwd = model(x, tap=strategy.needs_tap)
    losses = torch.stack([t.loss(o.float(), y) for t, o, y in zip(model.tasks, fwd.outputs, targets, strict=True)])
    optimizer.zero_grad(set_to_none=True)
    strategy.combine(losses).backward()
    detached = losses.detach()
    strategy.after_backward(detached, fwd.tap)
    optimizer.step()
    strategy.after_step()
    return detached


def train(
    problem: Problem,
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``config`` on ``problem``; ``on_epoch_end`` may raise to stop (the study layer prunes this way).

    Raises ``NonFiniteLossError`` when a task's training or validation loss of an epoch is not finite.
    """
    config = resolve_config(problem, config)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    assert config.epochs and config.batch_size
    torch.manual_seed(config.seed)  # for problems whose load() draws from torch's global generator
    data = problem.dataset()
    train_split, val_split = data.train.to(dev), data.val.to(dev)
    names = problem.task_names
    model, strategy, optimizer = build(problem, config, dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if config.bf16 and dev.type == "cuda" else None
    reference = _evaluate(model, val_split)[0].clamp_min(1e-12)
    result = TrainResult(problem.name, config, str(dev), dict(zip(names, reference.tolist(), strict=True)), model=model)
    shuffle = torch.Generator().manual_seed(config.seed)

    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_split), generator=shuffle).to(dev)
        loss_sum = torch.zeros(len(names), device=dev)
        n_batches = 0
        for start in range(0, len(train_split), config.batch_size):
            idx = order[start : start + config.batch_size]
            targets = [train_split.y[name][idx] for name in names]
            loss_sum += train_step(model, strategy, optimizer, train_split.x[idx], targets, autocast)
            n_batches += 1
        train_losses = loss_sum / n_batches
        strategy.on_epoch_end(train_losses)
        report = _epoch_report(epoch, names, model, strategy, val_split, train_losses, reference)
        _check_finite(report)
        result.history.append(report)
        if on_epoch_end is not None:
            on_epoch_end(report)
    return result


@torch.no_grad()
def _evaluate(model: MultiTaskModel, split: Split) -> tuple[Tensor, Tensor]:
    """Per-task validation loss and metric (shape T each)."""
    model.eval()
    chunks = [model(split.x[i : i + EVAL_BATCH]).outputs for i in range(0, len(split), EVAL_BATCH)]
    outputs = [torch.cat([c[t] for c in chunks]).float() for t in range(len(model.tasks))]
    losses = torch.stack([t.loss(o, split.y[t.name]) for t, o in zip(model.tasks, outputs, strict=True)])
    metrics = torch.stack([t.metric_value(o, split.y[t.name]) for t, o in zip(model.tasks, outputs, strict=True)])
    return losses, metrics


def _epoch_report(
    epoch: int,
    names: list[str],
    model: MultiTaskModel,
    strategy: WeightingStrategy,
    val_split: Split,
    train_losses: Tensor,
    reference: Tensor,
) -> EpochReport:
    val_losses, metrics = _evaluate(model, val_split)
    # One transfer per epoch: everything the report needs comes to the host together.
    series = {k: v.float() for k, v in strategy.report().items()}
    stacked = torch.stack([train_losses, val_losses, metrics, (val_losses / reference), *series.values()]).cpu()
    train_l, val_l, metric, normalised, *extra = stacked.tolist()
    named = dict(zip(series, extra, strict=True))
    tasks = {
        name: TaskEpoch(
            train_loss=train_l[i],
            val_loss=val_l[i],
            metric=metric[i],
            weight=named["weight"][i],
            sigma=named["sigma"][i] if "sigma" in named else None,
            grad_norm=named["grad_norm"][i] if "grad_norm" in named else None,
            grad_norm_target=named["grad_norm_target"][i] if "grad_norm_target" in named else None,
        )
        for i, name in enumerate(names)
    }
    objective = sum(normalised) / len(normalised)
    return EpochReport(epoch=epoch, tasks=tasks, objective=objective)


def _check_finite(report: EpochReport) -> None:
    for name, t in report.tasks.items():
        for split, value in (("train", t.train_loss), ("validation", t.val_loss)):
            if not math.isfinite(value):
                raise NonFiniteLossError(name, report.epoch, split)
