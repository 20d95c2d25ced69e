"""GradNorm.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018 (https://arxiv.org/abs/1711.02257).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from tuner.config import TrainConfig
from tuner.model import SharedTap
from tuner.problems import Task
from tuner.weighting._base import WeightingStrategy


def per_task_grad_norms(tap: SharedTap) -> Tensor:
    """G_i = ||grad_W (w_i L_i)||_2 over the last shared layer W (weight and bias), for every task at once.

    ``tap.pre.grad[i]`` is task i's gradient on that layer's output, so W's per-task gradient is
    ``pre.grad[i]^T @ inputs`` and the bias's is its column sum: one batched matmul, no autograd call per task.
    """
    delta = tap.pre.grad
    assert delta is not None, "backward() must run before the gradient norms are read"
    inputs = tap.inputs.detach().to(delta.dtype)
    weight_sq = torch.matmul(delta.transpose(1, 2), inputs).square().sum(dim=(1, 2))
    bias_sq = delta.sum(dim=1).square().sum(dim=1)
    return (weight_sq + bias_sq).sqrt()


class GradNorm(WeightingStrategy):
    """Learns task weights w so that each task's gradient norm G_i on the last shared layer approaches
    mean(G) * r_i^alpha, where r_i = L~_i / mean(L~) and L~_i = L_i(t) / L_i(0).

    L_i(0) is task i's loss on the first training batch. The network trains on sum_i w_i L_i with w held constant;
    w alone receives the GradNorm gradient, in closed form (the target is a constant):
    d/dw_i sum_j |G_j - target_j| = sign(G_i - target_i) * ||grad_W L_i||. After every step w is renormalised to sum
    to T and kept positive. Everything stays on the device: no host synchronisation per step.
    """

    name: ClassVar[str] = "gradnorm"
    needs_tap: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[Task], alpha: float = 1.5, min_weight: float = 1e-4) -> None:
        super().__init__(tasks)
        self.alpha = alpha
        self.min_weight = min_weight
        self.w = nn.Parameter(torch.ones(self.n_tasks))
        self.register_buffer("initial_losses", torch.ones(self.n_tasks))
        self.register_buffer("_g_sum", torch.zeros(self.n_tasks))
        self.register_buffer("_target_sum", torch.zeros(self.n_tasks))
        self._steps = 0
        self._steps_in_epoch = 0

    @classmethod
    def from_config(cls, tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
        return cls(tasks, alpha=config.alpha)

    def combine(self, losses: Tensor) -> Tensor:
        if self._steps == 0:
            self.initial_losses = losses.detach().clone()
        return (self.w.detach() * losses).sum()

    def after_backward(self, losses: Tensor, tap: SharedTap | None) -> None:
        assert tap is not None, "GradNorm needs the shared-layer tap (needs_tap=True)"
        g = per_task_grad_norms(tap).float()
        w = self.w.detach()
        ratio = losses.detach().float() / self.initial_losses.clamp_min(1e-12)
        target = g.mean() * (ratio / ratio.mean()).pow(self.alpha)
        # G_i = w_i ||grad_W L_i||, so d|G_i - target_i| / dw_i = sign(G_i - target_i) ||grad_W L_i||.
        self.w.grad = torch.sign(g - target) * g / w.clamp_min(self.min_weight)
        self._g_sum += g
        self._target_sum += target
        self._steps += 1
        self._steps_in_epoch += 1

    @torch.no_grad()
    def after_step(self) -> None:
        self.w.clamp_(min=self.min_weight)
        self.w.mul_(self.n_tasks / self.w.sum())

    def on_epoch_end(self, train_losses: Tensor) -> None:
        self._last_g = self._g_sum / max(self._steps_in_epoch, 1)
        self._last_target = self._target_sum / max(self._steps_in_epoch, 1)
        self._g_sum.zero_()
        self._target_sum.zero_()
        self._steps_in_epoch = 0

    def weights(self) -> Tensor:
        return self.w.detach().clone()

    def report(self) -> dict[str, Tensor]:
        out = {"weight": self.weights()}
        if hasattr(self, "_last_g"):
            out["grad_norm"] = self._last_g
            out["grad_norm_target"] = self._last_target
        return out
