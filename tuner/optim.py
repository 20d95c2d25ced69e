"""One optimizer, one param group per part: ``shared``, ``head:<task>`` per task, ``weighting``; and its schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from tuner.config import TrainConfig
from tuner.problems import ParameterGroups
from tuner.weighting import WeightingStrategy

#: Devices whose optimizer step uses torch's fused kernels (one kernel per param group instead of a loop over
#: tensors); elsewhere torch's default implementation runs.
FUSED_DEVICES: tuple[str, ...] = ("cuda",)


def param_groups(groups: ParameterGroups, strategy: WeightingStrategy, config: TrainConfig) -> list[dict[str, Any]]:
    """Each group has its own learning rate; the loss weights' group never decays."""
    assert config.lr_shared is not None and config.lr_heads is not None and config.lr_weighting is not None
    out: list[dict[str, Any]] = [{"name": "shared", "params": groups.shared, "lr": config.lr_shared}]
    for task, params in groups.tasks.items():
        out.append({"name": f"head:{task}", "params": params, "lr": config.lr_head.get(task, config.lr_heads)})
    weighting = list(strategy.parameters())
    if weighting:
        out.append({"name": "weighting", "params": weighting, "lr": config.lr_weighting, "weight_decay": 0.0})
    return out


def build_optimizer(
    groups: ParameterGroups, strategy: WeightingStrategy, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    specs = param_groups(groups, strategy, config)
    fused = True if device.type in FUSED_DEVICES else None
    if fused is None and device.type == "cpu":
        # The loss weights are a few numbers: their group's step is all dispatch, one fused call instead of ~10.
        for spec in specs:
            if spec["name"] == "weighting":
                spec["fused"] = True
    if config.optimizer == "sgd":
        return torch.optim.SGD(specs, lr=0.0, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(specs, lr=0.0, weight_decay=config.weight_decay, fused=fused)


def lr_factor(config: TrainConfig, step: int, total: int) -> float:
    """The learning rates' multiplier at ``step`` of ``total``: a linear warm-up over the first ``warmup`` fraction
    of the steps, then constant, or a cosine or linear decay towards zero."""
    warm = math.ceil(config.warmup * total)
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    rest = (step - warm) / max(total - warm, 1)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    return 1.0 - rest


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int) -> Any:
    """A ``LambdaLR`` stepped ``total`` times in all (per batch, or per epoch when a loader's length is unknown);
    ``None`` when the rates stay fixed."""
    if config.schedule == "constant" and config.warmup == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, max(total, 1)))
