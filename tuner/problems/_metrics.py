"""Validation metrics: a name, an explicit direction and a torchmetrics ``Metric`` computed over a whole split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torchmetrics
from torch import Tensor
from torchmetrics import classification as tmc
from torchmetrics import regression as tmr

Direction = Literal["minimize", "maximize"]
Prepare = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
#: The metric presets by name.
METRIC_PRESETS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1", "auc", "miou", "rmse", "mae", "mse")


@dataclass(frozen=True)
class Metric:
    """A named metric with its direction. ``factory`` makes a fresh torchmetrics ``Metric`` (one per evaluation:
    it accumulates every batch of a split and computes once, so AUC or mIoU are not batch means); ``prepare`` maps a
    batch's (prediction, target) to what that metric takes."""

    name: str
    direction: Direction
    factory: Callable[[], torchmetrics.Metric]
    prepare: Prepare | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("minimize", "maximize"):
            raise ValueError(
                f"metric {self.name!r}: direction must be 'minimize' or 'maximize', not {self.direction!r}"
            )

    @classmethod
    def of(cls, metric: Any, *, direction: Direction | None = None, name: str | None = None) -> Metric:
        """Wrap a torchmetrics ``Metric`` object; its ``higher_is_better`` gives the direction unless one is given."""
        if not isinstance(metric, torchmetrics.Metric):
            raise ValueError(f"metric must be a preset name, a Metric or a torchmetrics Metric, not {metric!r}")
        if direction is None:
            better = getattr(metric, "higher_is_better", None)
            if better is None:
                raise ValueError(f"{type(metric).__name__} does not declare higher_is_better: pass direction=")
            direction = "maximize" if better else "minimize"
        template = metric
        return cls(name or _snake(type(metric).__name__), direction, lambda: template.clone())

    def with_direction(self, direction: Direction) -> Metric:
        return replace(self, direction=direction)

    def new(self, device: Any) -> torchmetrics.Metric:
        metric = self.factory()
        metric.reset()
        return metric.to(device)

    def update(self, metric: torchmetrics.Metric, pred: Tensor, target: Tensor) -> None:
        if self.prepare is not None:
            pred, target = self.prepare(pred, target)
        metric.update(pred, target)


def metric_preset(name: str, kind: str, out_dim: int, scale: float, direction: Direction | None) -> Metric:
    """A preset metric for a task whose loss preset is ``kind`` (``custom`` reads the prediction as a regression
    estimate, class logits along dim 1 when ``out_dim`` > 1, or one binary logit)."""
    if name not in METRIC_PRESETS:
        raise ValueError(
            f"unknown metric {name!r}; expected one of {', '.join(METRIC_PRESETS)} or a torchmetrics Metric"
        )
    if name in ("rmse", "mae", "mse"):
        metric = _regression(name, scale)
    else:
        family = kind if kind in ("classification", "binary", "multilabel") else _family(out_dim)
        if kind in ("regression", "l1"):
            raise ValueError(f"metric {name!r} does not suit a {kind} task; expected rmse, mae or mse")
        metric = _classification(name, family, out_dim)
    return metric if direction is None else metric.with_direction(direction)


def _family(out_dim: int) -> str:
    return "classification" if out_dim > 1 else "binary"


def _regression(name: str, scale: float) -> Metric:
    def prepare(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        # Standardised units to the user's: (p - y) * scale is the difference of the de-standardised values.
        return (pred.float() * scale).reshape(-1), (target.to(pred.dtype) * scale).reshape(-1)

    if name == "mae":
        return Metric(name, "minimize", tmr.MeanAbsoluteError, prepare)
    squared = name == "mse"
    return Metric(name, "minimize", lambda: tmr.MeanSquaredError(squared=squared), prepare)


def _classification(name: str, family: str, out_dim: int) -> Metric:
    if family == "binary":
        return _binary(name)
    if family == "multilabel":
        return _multilabel(name, out_dim)
    factories: dict[str, Callable[[], torchmetrics.Metric]] = {
        "accuracy": lambda: tmc.MulticlassAccuracy(out_dim, average="micro"),
        "balanced_accuracy": lambda: tmc.MulticlassAccuracy(out_dim, average="macro"),
        "f1": lambda: tmc.MulticlassF1Score(out_dim, average="macro"),
        "auc": lambda: tmc.MulticlassAUROC(out_dim),
        "miou": lambda: tmc.MulticlassJaccardIndex(out_dim, average="macro"),
    }
    # AUC needs probabilities; the others take logits along dim 1 (argmax), with any extra (pixel) dims.
    prepare = _softmax if name == "auc" else None
    return Metric(name, "maximize", factories[name], prepare)


def _binary(name: str) -> Metric:
    if name == "balanced_accuracy":
        # Two classes, macro-averaged recall: the mean of sensitivity and specificity.
        return Metric(name, "maximize", lambda: tmc.MulticlassAccuracy(2, average="macro"), _binary_labels)
    factories: dict[str, Callable[[], torchmetrics.Metric]] = {
        "accuracy": tmc.BinaryAccuracy,
        "f1": tmc.BinaryF1Score,
        "auc": tmc.BinaryAUROC,
        "miou": tmc.BinaryJaccardIndex,
    }
    return Metric(name, "maximize", factories[name], _sigmoid_flat)


def _multilabel(name: str, labels: int) -> Metric:
    factories: dict[str, Callable[[], torchmetrics.Metric]] = {
        "accuracy": lambda: tmc.MultilabelAccuracy(labels),
        "balanced_accuracy": lambda: tmc.MultilabelAccuracy(labels, average="macro"),
        "f1": lambda: tmc.MultilabelF1Score(labels, average="macro"),
        "auc": lambda: tmc.MultilabelAUROC(labels),
        "miou": lambda: tmc.MultilabelJaccardIndex(labels),
    }
    return Metric(name, "maximize", factories[name], _sigmoid_labels)


def _softmax(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return pred.float().softmax(dim=1), target


def _sigmoid_flat(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    # Probabilities explicitly: torchmetrics applies a sigmoid only when some value falls outside [0, 1].
    return pred.float().sigmoid().reshape(-1), target.reshape(-1).long()


def _binary_labels(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return (pred.reshape(-1) > 0).long(), target.reshape(-1).long()


def _sigmoid_labels(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return pred.float().sigmoid(), target.long()


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))
