"""Dynamic Weight Average.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (https://arxiv.org/abs/1803.10704).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from tuner.config import ConfigError
from tuner.problems import Knob, Task
from tuner.weighting._base import WeightingStrategy


class DWA(WeightingStrategy):
    """lambda_k = T softmax(w_k / tau), w_k = L_k(t-1) / L_k(t-2) on epoch-mean training losses; 1 for the first two
    epochs."""

    name: ClassVar[str] = "dwa"
    description: ClassVar[str] = "dynamic weight average of the epoch loss ratios (Liu et al. 2019)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "temperature": Knob(2.0, low=0.5, high=10.0, log=True, help="softmax temperature of the loss-ratio weights"),
    }
    _lambda: Tensor
    _prev: Tensor

    def __init__(self, tasks: Sequence[Task], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ConfigError(f"strategy_options: dwa's temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.register_buffer("_lambda", torch.ones(self.n_tasks))
        self.register_buffer("_prev", torch.ones(self.n_tasks))
        self._epochs_seen = 0

    def combine(self, losses: Tensor) -> Tensor:
        return (self._lambda * losses).sum()

    def on_epoch_end(self, train_losses: Tensor) -> None:
        current = train_losses.detach()
        self._epochs_seen += 1
        # A host-side epoch counter: the first two epochs keep lambda = 1 without reading a tensor.
        if self._epochs_seen >= 2:
            ratio = current / self._prev.clamp_min(1e-12)
            self._lambda = self.n_tasks * torch.softmax(ratio / self.temperature, dim=0)
        self._prev = current.clone()

    def weights(self) -> Tensor:
        return self._lambda.detach().clone()
