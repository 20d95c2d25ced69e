"""One optimizer, one param group per part: ``shared`` (trunk), ``head:<task>`` per head, ``weighting``."""

from __future__ import annotations

from typing import Any

import torch

from tuner.config import TrainConfig
from tuner.model import MultiTaskModel
from tuner.weighting import WeightingStrategy

#: Devices whose optimizer step uses torch's fused kernels (one kernel per param group instead of a loop over
#: tensors); elsewhere torch's default implementation runs.
FUSED_DEVICES: tuple[str, ...] = ("cuda",)


def param_groups(model: MultiTaskModel, strategy: WeightingStrategy, config: TrainConfig) -> list[dict[str, Any]]:
    """Each group has its own learning rate; the loss weights' group never decays."""
    assert config.lr_shared is not None and config.lr_heads is not None and config.lr_weighting is not None
    groups: list[dict[str, Any]] = [
        {"name": "shared", "params": model.shared_parameters(), "lr": config.lr_shared},
    ]
    for task, head in zip(model.tasks, model.heads, strict=True):
        lr = config.lr_head.get(task.name, config.lr_heads)
        groups.append({"name": f"head:{task.name}", "params": list(head.parameters()), "lr": lr})
    weighting = list(strategy.parameters())
    if weighting:
        groups.append({"name": "weighting", "params": weighting, "lr": config.lr_weighting, "weight_decay": 0.0})
    return groups


def build_optimizer(model: MultiTaskModel, strategy: WeightingStrategy, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, strategy, config)
    fused = True if _device_type(model) in FUSED_DEVICES else None
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=0.0, weight_decay=config.weight_decay, fused=fused)


def _device_type(model: MultiTaskModel) -> str:
    return next(model.parameters()).device.type
