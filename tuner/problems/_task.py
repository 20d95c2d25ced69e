"""A task: its name, its loss and its metric (with the metric's direction), and the loss and metric presets."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from tuner.problems._metrics import Direction, Metric, metric_preset

#: The loss presets; ``custom`` is any callable ``(prediction, target) -> scalar``.
TaskKind = Literal["regression", "l1", "classification", "binary", "multilabel", "custom"]
LOSSES: tuple[str, ...] = ("regression", "l1", "classification", "binary", "multilabel")
#: Each preset's default metric.
DEFAULT_METRIC: dict[str, str] = {
    "regression": "rmse",
    "l1": "mae",
    "classification": "accuracy",
    "binary": "auc",
    "multilabel": "f1",
}
LossFn = Callable[..., Tensor]


class ProblemError(ValueError):
    """Bad problem options or data; the message names the problem and the offending field."""


class Masked(NamedTuple):
    """A target defined only on some rows: ``mask`` (bool, one entry per sample) says which.

    Loss and metric see only the rows where ``mask`` is true; a batch with none of them adds zero loss.
    """

    value: Tensor
    mask: Tensor


def _per_sample(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The preset's unreduced loss: one value per element (reduced by a plain or masked mean)."""
    if kind == "regression":
        return lambda p, y: F.mse_loss(p, y.to(p.dtype), reduction="none")
    if kind == "l1":
        return lambda p, y: F.l1_loss(p, y.to(p.dtype), reduction="none")
    if kind == "classification":  # logits (B, C, *extra) and class indices (B, *extra)
        return lambda p, y: F.cross_entropy(p, y, reduction="none")
    # binary (B,) or (B, 1) logits; multi-label (B, L) logits with 0/1 targets
    return lambda p, y: F.binary_cross_entropy_with_logits(p, y.to(p.dtype).view_as(p), reduction="none")


@dataclass(frozen=True)
class Task:
    """One task of a multi-task problem.

    ``loss`` is a preset name (``regression`` = MSE, ``l1``, ``classification`` = cross-entropy over dim 1 with any
    extra dims such as pixels, ``binary`` = BCE with logits, ``multilabel``) or any callable
    ``(prediction, target) -> scalar tensor``; a callable that takes a third argument receives the ``Masked``
    target's mask and applies it itself, otherwise it sees the defined rows only.

    ``metric`` is a preset name (``accuracy``, ``balanced_accuracy``, ``f1``, ``auc``, ``miou``, ``rmse``, ``mae``,
    ``mse``), a ``Metric``, or a torchmetrics ``Metric`` object (its ``higher_is_better`` gives the direction, or pass
    ``direction``); after construction ``direction`` always holds the metric's. Metrics are computed over the whole
    validation set. ``out_dim`` is the prediction's size along dim 1 (the number of classes or labels);
    ``metric_scale`` converts a regression metric from standardised units back to the user's.
    """

    name: str
    loss: str | LossFn = "regression"
    out_dim: int = 1
    metric: str | Metric | Any = ""
    metric_scale: float = 1.0
    direction: Direction | None = None
    _metric: Metric = field(init=False, repr=False, compare=False)
    _per_sample: Callable[[Tensor, Tensor], Tensor] | None = field(init=False, repr=False, compare=False)
    _takes_mask: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ProblemError(f"task name must be a non-empty string, got {self.name!r}")
        if isinstance(self.loss, str) and self.loss not in LOSSES:
            raise ProblemError(
                f"task {self.name!r}: unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)} or a callable"
            )
        if not isinstance(self.loss, str) and not callable(self.loss):
            raise ProblemError(f"task {self.name!r}: loss must be a preset name or a callable")
        kind = self.kind
        try:
            metric = self._resolve_metric(kind)
        except ValueError as exc:
            raise ProblemError(f"task {self.name!r}: {exc}") from None
        object.__setattr__(self, "_metric", metric)
        object.__setattr__(self, "direction", metric.direction)
        object.__setattr__(self, "_per_sample", _per_sample(kind) if kind != "custom" else None)
        object.__setattr__(self, "_takes_mask", callable(self.loss) and _arity(self.loss) >= 3)

    def _resolve_metric(self, kind: str) -> Metric:
        chosen = self.metric or DEFAULT_METRIC.get(kind, "")
        if isinstance(chosen, Metric):
            return chosen if self.direction is None else chosen.with_direction(self.direction)
        if isinstance(chosen, str):
            if not chosen:
                raise ValueError("a task with a custom loss needs a metric (a preset name or a torchmetrics Metric)")
            return metric_preset(chosen, kind, self.out_dim, self.metric_scale, self.direction)
        return Metric.of(chosen, direction=self.direction)

    @property
    def kind(self) -> TaskKind:
        """The loss preset's name, or ``custom``."""
        return self.loss if isinstance(self.loss, str) else "custom"  # type: ignore[return-value]

    @property
    def metric_name(self) -> str:
        return self._metric.name

    @property
    def metric_def(self) -> Metric:
        return self._metric

    def compute_loss(self, pred: Tensor, target: Tensor | Masked) -> Tensor:
        """The batch's scalar loss; a ``Masked`` target counts only its defined rows (never reads the host)."""
        pred = pred.float()
        if self._per_sample is not None:
            if isinstance(target, Masked):
                per = self._per_sample(pred, target.value)
                weight = _broadcast_mask(target.mask, per)
                return (per * weight).sum() / weight.sum().clamp_min(1.0)
            return self._per_sample(pred, target).mean()
        assert callable(self.loss)
        if isinstance(target, Masked):
            if self._takes_mask:
                return self.loss(pred, target.value, target.mask)
            rows = target.mask.bool()
            if not bool(rows.any()):
                return pred.sum() * 0.0
            return self.loss(pred[rows], target.value[rows])
        return self.loss(pred, target)

    def count(self, target: Tensor | Masked) -> Tensor:
        """How many samples of a batch this task is defined on (weights a batch's loss in a set's mean)."""
        if isinstance(target, Masked):
            return target.mask.bool().sum()
        return torch.tensor(target.shape[0], device=target.device)

    def prediction_feature(self, pred: Tensor) -> Tensor:
        """What a chained task receives from this task: probabilities, or the raw estimate for regressions."""
        if self.kind == "classification":
            return pred.softmax(dim=1)
        if self.kind in ("binary", "multilabel"):
            return pred.sigmoid()
        return pred


def _broadcast_mask(mask: Tensor, like: Tensor) -> Tensor:
    weight = mask.to(like.dtype)
    return weight.view(weight.shape[0], *([1] * (like.dim() - 1))).expand_as(like)


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional)
