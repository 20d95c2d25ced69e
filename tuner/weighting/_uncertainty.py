"""Homoscedastic uncertainty weighting.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018
(https://arxiv.org/abs/1705.07115); the positive regulariser of Liebel & Körner, "Auxiliary Tasks in Multi-task
Learning", 2018 (https://arxiv.org/abs/1805.06334).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from tuner.problems import Task
from tuner.weighting._base import WeightingStrategy


class Uncertainty(WeightingStrategy):
    """Learns s_i = log sigma_i^2 per task. MSE regression: 1/2 e^(-s) L + 1/2 s; other losses: e^(-s) L + 1/2 s."""

    name: ClassVar[str] = "uncertainty"
    description: ClassVar[str] = "homoscedastic uncertainty weighting, learned log sigma^2 (Kendall et al. 2018)"
    log_factor: Tensor

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.log_var = nn.Parameter(torch.zeros(self.n_tasks))
        # A Gaussian likelihood (MSE) gives 1/2; a softmax, Bernoulli or any other loss is weighted by e^(-s).
        factor = [0.5 if t.kind == "regression" else 1.0 for t in self.tasks]
        # factor * e^(-s) = e^(ln factor - s): one operation less, in a step where operations outweigh arithmetic.
        self.register_buffer("log_factor", torch.tensor(factor).log())

    def combine(self, losses: Tensor) -> Tensor:
        weighted = torch.dot(torch.exp(self.log_factor - self.log_var), losses)
        return torch.add(weighted, self.log_var.sum(), alpha=0.5)

    def weights(self) -> Tensor:
        return torch.exp(self.log_factor - self.log_var).detach()

    def report(self) -> dict[str, Tensor]:
        return {"weight": self.weights(), "sigma": torch.exp(0.5 * self.log_var).detach()}


class UncertaintyPositive(WeightingStrategy):
    """Learns c_i per task: L / (2 c^2) + ln(1 + c^2); the regulariser cannot go negative."""

    name: ClassVar[str] = "uncertainty-positive"
    description: ClassVar[str] = "uncertainty weighting with a positive regulariser ln(1 + c^2) (Liebel & Koerner 2018)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.c = nn.Parameter(torch.ones(self.n_tasks))

    def combine(self, losses: Tensor) -> Tensor:
        c2 = self.c.square()
        return (losses / (2 * c2) + torch.log1p(c2)).sum()

    def weights(self) -> Tensor:
        return (1.0 / (2 * self.c.square())).detach()

    def report(self) -> dict[str, Tensor]:
        return {"weight": self.weights(), "sigma": self.c.abs().detach()}
