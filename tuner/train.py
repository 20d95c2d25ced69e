"""The training loop: one configuration of one problem, with per-epoch reports for the study layer.

Reads top to bottom: resolve the configuration against the problem's defaults, build the problem's model, the
strategy, the optimizer and its schedule, measure the untrained validation losses (the objective's reference), then
train epoch by epoch over in-memory tensors or the problem's data loaders. ``train_step`` is the one step the loop
repeats; the benchmark times exactly that function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tuner.budget import Budget, BudgetWatch
from tuner.config import ConfigError, TrainConfig
from tuner.device import resolve_device
from tuner.gradients import GradNormTap, HeadViews, TaskJacobian
from tuner.optim import build_optimizer, build_scheduler
from tuner.problems import Masked, Problem, ProblemError, Split, SplitLike, Task, check_groups, iterate
from tuner.weighting import WeightingStrategy, build_strategy

EVAL_BATCH = 2048


class NonFiniteLossError(RuntimeError):
    """A task's loss became NaN or infinite; training stops."""

    def __init__(self, task: str, epoch: int, split: str) -> None:
        super().__init__(f"non-finite {split} loss for task {task!r} at epoch {epoch}")
        self.task, self.epoch, self.split = task, epoch, split


@dataclass
class TaskEpoch:
    """One task's numbers after an epoch: mean training loss, validation loss and metric, current loss weight,
    and every other series the strategy reports (``WeightingStrategy.report``) by name: ``sigma`` for the
    uncertainty strategies, the epoch's mean GradNorm ``grad_norm`` and its target for GradNorm, whatever a
    strategy of its own records."""

    train_loss: float
    val_loss: float
    metric: float
    weight: float
    series: dict[str, float] = field(default_factory=dict)

    @property
    def sigma(self) -> float | None:
        return self.series.get("sigma")

    @property
    def grad_norm(self) -> float | None:
        return self.series.get("grad_norm")

    @property
    def grad_norm_target(self) -> float | None:
        return self.series.get("grad_norm_target")


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
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    #: Per task, the test split's ``loss`` and ``metric`` after training, when the problem has a test split.
    test: dict[str, dict[str, float]] | None = None

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
        if any(t.series for t in tasks.values()):
            out["series"] = {name: dict(t.series) for name, t in tasks.items()}
        if self.test is not None:
            out["test"] = self.test
        return out


def resolve_config(problem: Problem, config: TrainConfig) -> TrainConfig:
    """Fill every ``None`` with the problem's default and check the task, knob and chain names it uses."""
    d = problem.defaults
    filled = config.model_copy(
        update={
            "lr_shared": d.lr_shared if config.lr_shared is None else config.lr_shared,
            "lr_heads": d.lr_heads if config.lr_heads is None else config.lr_heads,
            "lr_weighting": d.lr_weighting if config.lr_weighting is None else config.lr_weighting,
            "batch_size": config.batch_size or d.batch_size,
            "epochs": config.epochs or d.epochs,
            "model": problem.knob_values(config.model),
        }
    )
    names = problem.task_names
    for where, used in (("lr_head", filled.lr_head), ("weights", filled.weights or {})):
        unknown = sorted(set(used) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown task {unknown[0]!r}; tasks of {problem.name!r}: {names}")
    chain = filled.chain
    if chain is not None:
        for task_name in (chain.source, chain.target):
            if task_name not in names:
                raise ProblemError(f"chain: unknown task {task_name!r}; tasks: {names}")
        if chain.active and (chain.source, chain.target) not in problem.chains:
            offered = ", ".join(f"{s}:{t}" for s, t in problem.chains) or "none"
            raise ConfigError(
                f"chain: {problem.name!r} does not support {chain.source}:{chain.target}; it offers {offered}"
            )
    return filled


@dataclass
class Run:
    """What one training run steps: the problem's model, the strategy, the optimizer and the step's settings."""

    model: nn.Module
    tasks: list[Task]
    strategy: WeightingStrategy
    optimizer: torch.optim.Optimizer
    #: Each task's gradient norm on the last shared layer, when the strategy needs them.
    grad_norms: GradNormTap | None
    #: Every model parameter, for gradient clipping.
    clipped: list[nn.Parameter]
    clip_grad: float | None = None
    autocast: AbstractContextManager[Any] | None = None
    scaler: torch.amp.GradScaler | None = None
    #: Every task's gradient on the shared parameters, for a strategy that runs the backward pass itself.
    jacobian: TaskJacobian | None = None


def build(problem: Problem, config: TrainConfig, device: torch.device) -> Run:
    """The run for a resolved ``config`` (see ``resolve_config``), seeded by ``config.seed``."""
    torch.manual_seed(config.seed)
    chain = config.chain if config.chain is not None and config.chain.active else None
    model = problem.build_model(dict(config.model), chain).to(device)
    groups = problem.parameter_groups(model)
    check_groups(model, groups, problem.task_names)
    strategy = build_strategy(problem.tasks, config).to(device)
    heads = [groups.tasks[name] for name in problem.task_names]
    tap = GradNormTap.of(model, problem.last_shared_layer(model), heads) if strategy.needs_grad_norms else None
    jacobian = TaskJacobian.of(model, groups.shared, heads) if strategy.aggregates_gradients else None
    autocast, scaler = _precision(config, device)
    return Run(
        model=model,
        tasks=problem.tasks,
        strategy=strategy,
        optimizer=build_optimizer(groups, strategy, config, device),
        grad_norms=tap,
        clipped=[p for p in model.parameters() if p.requires_grad],
        clip_grad=config.clip_grad,
        autocast=autocast,
        scaler=scaler,
        jacobian=jacobian,
    )


def _precision(
    config: TrainConfig, device: torch.device
) -> tuple[AbstractContextManager[Any] | None, torch.amp.GradScaler | None]:
    """Autocast on CUDA for bf16 and fp16 (fp16 with a gradient scaler); other devices train in fp32."""
    if config.precision == "fp32" or device.type != "cuda":
        return None, None
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
    return torch.autocast("cuda", dtype=dtype), scaler


def train_step(run: Run, inputs: Any, targets: Mapping[str, Any]) -> Tensor:
    """One optimisation step on one batch; returns the per-task losses (shape T, detached, still on the device)."""
    strategy, optimizer, scaler, tap = run.strategy, run.optimizer, run.scaler, run.grad_norms
    recorder: HeadViews | None = tap if tap is not None else run.jacobian
    with run.autocast or nullcontext(), recorder.recording() if recorder is not None else nullcontext():
        outputs = run.model(inputs)
    losses = torch.stack([t.compute_loss(_prediction(outputs, t), targets[t.name]) for t in run.tasks])
    optimizer.zero_grad(set_to_none=True)
    combined = strategy.combine(losses)
    scaled = scaler.scale(combined) if scaler is not None else combined
    norms = None
    if run.jacobian is not None:  # the strategy's own backward pass: every task's gradient, aggregated
        strategy.backward(losses, run.jacobian, scaler.scale(losses.new_ones(())) if scaler is not None else None)
    elif tap is not None:
        norms = tap.backward(losses, scaled)  # the step's backward pass, and each task's gradient norm on the layer
    else:
        scaled.backward()
    if scaler is not None:
        scaler.unscale_(optimizer)  # before the strategy sets gradients of its own, which are not scaled
    detached = losses.detach()
    strategy.after_backward(detached, norms)
    if run.clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(run.clipped, run.clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    strategy.after_step()
    return detached


def train(
    problem: Problem,
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    on_epoch_end: EpochCallback | None = None,
    budget: Budget | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train ``config`` on ``problem``; ``on_epoch_end`` may raise to stop (the study layer prunes this way).

    The test split, when the problem has one, is evaluated once after training (``TrainResult.test``) unless
    ``evaluate_test`` is false: a study's trials never read it, so nothing a search chooses can depend on it.

    Raises ``NonFiniteLossError`` when a task's training or validation loss of an epoch is not finite, and
    ``BudgetExceeded`` when the run goes over ``budget`` (default: the operator's, ``Budget.from_env()``), checked
    after loading the data and at every batch and epoch boundary.
    """
    watch = BudgetWatch(budget or Budget.from_env())
    config = resolve_config(problem, config)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    assert config.epochs and config.batch_size
    torch.manual_seed(config.seed)  # for problems whose load() draws from torch's global generator
    data = problem.dataset()
    watch.check("after loading the data")
    train_split, val_split = _on(data.train, dev), _on(data.val, dev)
    names = problem.task_names
    run = build(problem, config, dev)
    steps = _steps_per_epoch(train_split, config.batch_size)
    scheduler = build_scheduler(run.optimizer, config, config.epochs * (steps or 1))
    reference = evaluate(run.model, run.tasks, val_split, dev)[0].clamp_min(1e-12)
    result = TrainResult(problem.name, config, str(dev), dict(zip(names, reference.tolist(), strict=True)))
    result.model = run.model
    shuffle = torch.Generator().manual_seed(config.seed)

    for epoch in range(config.epochs):
        run.model.train()
        order = torch.randperm(len(train_split), generator=shuffle).to(dev) if isinstance(train_split, Split) else None
        loss_sum = torch.zeros(len(names), device=dev)
        n_batches = 0
        for inputs, targets in iterate(train_split, dev, config.batch_size, order):
            loss_sum += train_step(run, inputs, targets)
            n_batches += 1
            if scheduler is not None and steps:
                scheduler.step()
            watch.check("at epoch %d, batch %d", epoch + 1, n_batches)
        if n_batches == 0:
            raise ProblemError(f"problem {problem.name!r}: the training split yielded no batch")
        if scheduler is not None and not steps:
            scheduler.step()  # a loader of unknown length: the schedule advances per epoch
        train_losses = loss_sum / n_batches
        run.strategy.on_epoch_end(train_losses)
        report = _epoch_report(epoch, names, run, val_split, dev, train_losses, reference)
        _check_finite(report)
        result.history.append(report)
        if on_epoch_end is not None:
            on_epoch_end(report)
        watch.check("after epoch %d", epoch + 1)
    if data.test is not None and evaluate_test:
        losses, metrics = evaluate(run.model, run.tasks, _on(data.test, dev), dev)
        result.test = {
            n: {"loss": loss, "metric": metric}
            for n, loss, metric in zip(names, losses.tolist(), metrics.tolist(), strict=True)
        }
    return result


def _on(split: SplitLike, device: torch.device) -> SplitLike:
    return split.to(device) if isinstance(split, Split) else split


def _steps_per_epoch(split: SplitLike, batch_size: int) -> int | None:
    if isinstance(split, Split):
        return math.ceil(len(split) / batch_size)
    try:
        return len(split)  # type: ignore[arg-type]
    except TypeError:  # an iterable dataset without a length
        return None


def _prediction(outputs: Any, task: Task) -> Tensor:
    if not isinstance(outputs, Mapping):
        raise ProblemError(
            f"the model's forward must return a mapping from task name to prediction, not {type(outputs).__name__}"
        )
    if task.name not in outputs:
        raise ProblemError(f"the model's output has no prediction for task {task.name!r}; it has {sorted(outputs)}")
    return outputs[task.name]


@torch.no_grad()
def evaluate(model: nn.Module, tasks: Sequence[Task], split: SplitLike, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-task loss (the mean over the samples each task is defined on) and metric over the whole split (shape T
    each); each metric accumulates every batch and is computed once."""
    model.eval()
    loss_sum = torch.zeros(len(tasks), device=device)
    counts = torch.zeros(len(tasks), device=device)
    metrics = [t.metric_def.new(device) for t in tasks]
    for inputs, targets in iterate(split, device, EVAL_BATCH):
        outputs = model(inputs)
        for i, task in enumerate(tasks):
            pred, target = _prediction(outputs, task).float(), targets[task.name]
            n = task.count(target)
            loss_sum[i] += task.compute_loss(pred, target) * n
            counts[i] += n
            if isinstance(target, Masked):
                rows = target.mask.bool()
                pred, target = pred[rows], target.value[rows]
            if target.shape[0]:
                task.metric_def.update(metrics[i], pred, target)
    values = [_compute(m) for m in metrics]
    return loss_sum / counts.clamp_min(1.0), torch.stack(values).to(device)


def _compute(metric: Any) -> Tensor:
    if not metric.update_called:
        return torch.tensor(float("nan"))
    return metric.compute().float().reshape(-1)[0].cpu()


def _epoch_report(
    epoch: int,
    names: list[str],
    run: Run,
    val_split: SplitLike,
    device: torch.device,
    train_losses: Tensor,
    reference: Tensor,
) -> EpochReport:
    val_losses, metrics = evaluate(run.model, run.tasks, val_split, device)
    # One transfer per epoch: everything the report needs comes to the host together.
    series = {k: v.float() for k, v in run.strategy.report().items()}
    stacked = torch.stack([train_losses, val_losses, metrics, (val_losses / reference), *series.values()]).cpu()
    train_l, val_l, metric, normalised, *extra = stacked.tolist()
    named = dict(zip(series, extra, strict=True))
    weights = named.pop("weight")
    tasks = {
        name: TaskEpoch(
            train_loss=train_l[i],
            val_loss=val_l[i],
            metric=metric[i],
            weight=weights[i],
            series={key: values[i] for key, values in named.items()},
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
