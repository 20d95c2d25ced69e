"""GradNorm.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018 (https://arxiv.org/abs/1711.02257).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from tuner.config import ConfigError, TrainConfig
from tuner.gradients import TaskNorms
from tuner.problems import Knob, Task
from tuner.weighting._base import WeightingStrategy

#: Steps after which the epoch's per-step G and targets are summed into one entry, which bounds their memory.
COLLAPSE_EVERY = 256


class GradNorm(WeightingStrategy):
    """Learns task weights w so that each task's gradient norm G_i on the last shared layer approaches
    mean(G) * r_i^alpha, where r_i = L~_i / mean(L~) and L~_i = L_i(t) / L_i(0).

    L_i(0) is task i's loss on the first training batch (before any update). The network trains on
    sum_i w_i L_i with w held constant; w alone receives the GradNorm gradient, in closed form (the target is a
    constant): d/dw_i sum_j |G_j - target_j| = sign(G_i - target_i) * ||grad_W L_i||, so no second-order gradient
    reaches the network. After every step w is renormalised to sum to T and kept positive. Everything stays on the
    device: no host synchronisation per step.

    With fp16 (``skip_overflow``) the norms come from the gradient scaler's scaled backward pass: in a step whose
    scaled gradients overflowed they are infinite, the scaler skips the step's update, and the epoch's means of G
    and of the targets leave that step out.
    """

    name: ClassVar[str] = "gradnorm"
    description: ClassVar[str] = "balances the tasks' gradient norms on the last shared layer (Chen et al. 2018)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "alpha": Knob(1.5, low=0.0, high=3.0, help="asymmetry: how strongly slow tasks are pulled up"),
    }
    needs_grad_norms: ClassVar[bool] = True
    initial_losses: Tensor
    _last_g: Tensor
    _last_target: Tensor
    _counted: Tensor
    _uniform: Tensor

    def __init__(
        self, tasks: Sequence[Task], alpha: float = 1.5, min_weight: float = 1e-4, skip_overflow: bool = False
    ) -> None:
        super().__init__(tasks)
        if alpha < 0:
            raise ConfigError(f"strategy_options: gradnorm's alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self._target_scale = float(self.n_tasks) ** (alpha - 1.0)
        self.min_weight = min_weight
        self.skip_overflow = skip_overflow
        self.w = nn.Parameter(torch.ones(self.n_tasks))
        self.register_buffer("initial_losses", torch.ones(self.n_tasks))
        self.register_buffer("_last_g", torch.zeros(self.n_tasks))
        self.register_buffer("_last_target", torch.zeros(self.n_tasks))
        self.register_buffer("_counted", torch.ones(()), persistent=False)
        self.register_buffer("_uniform", torch.full((self.n_tasks,), 1.0 / self.n_tasks), persistent=False)
        # The epoch's G, targets and whether each step counted, kept as references and summed once per epoch (or
        # every COLLAPSE_EVERY steps) rather than added up with more operations every step.
        self._epoch: list[tuple[Tensor, Tensor, Tensor]] = []
        # Host-side: whether L(0) was taken, decided without reading any tensor (and set once: nn.Module's
        # attribute assignment costs as much as a tensor operation, too much for every step).
        self._started = False

    @classmethod
    def from_config(cls, tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
        return cls(tasks, **cls.knob_values(config.strategy_options), skip_overflow=config.precision == "fp16")

    def combine(self, losses: Tensor) -> Tensor:
        if not self._started:
            self.initial_losses = losses.detach().float().clamp_min(1e-12)
            self._started = True
        return torch.dot(self.w.detach(), losses)

    def after_backward(self, losses: Tensor, grad_norms: TaskNorms | None) -> None:
        assert grad_norms is not None, "GradNorm needs the per-task gradient norms (needs_grad_norms=True)"
        # Few operations: on a CPU each one's dispatch costs about as much as its arithmetic on T numbers.
        norms = grad_norms.scaled / grad_norms.weights  # ||grad_W L_i||: the weights are w (x the scale) > 0
        # G_i = ||grad_W (w_i L_i)||: what the step backpropagated, sum_i w_i L_i, unless fp16's gradient scaler
        # multiplied it by its scale.
        g = self.w.detach() * norms if self.skip_overflow else grad_norms.scaled
        # target_i = mean(G) (r_i / mean(r))^alpha = sum(G) T^(alpha - 1) (r_i / sum(r))^alpha: sums, which cost half
        # a mean on a CPU.
        ratio = losses / self.initial_losses
        target = ratio.div_(ratio.sum()).pow_(self.alpha).mul_(g.sum())  # target_i / T^(alpha - 1)
        gap = torch.sub(g, target, alpha=self._target_scale)  # G_i - target_i
        # d|G_i - target_i| / dw_i = sign(G_i - target_i) ||grad_W L_i||.
        self.w.grad = torch.copysign(norms, gap)
        # The epoch keeps G and the targets (divided by T^(alpha - 1), a constant factor).
        if self.skip_overflow:  # one infinite norm makes every target infinite (through mean(G)): skip the step
            counted = gap.isfinite().all()
            self._epoch.append((g.where(counted, 0.0), target.where(counted, 0.0), counted.float()))
        else:
            self._epoch.append((g, target, self._counted))
        if len(self._epoch) >= COLLAPSE_EVERY:
            self._epoch = [self._epoch_sums()]

    def after_step(self) -> None:
        w = self.w.detach()  # shares w's storage: updating it in place needs no no_grad() context
        w.clamp_(min=self.min_weight)
        w.div_(torch.dot(w, self._uniform))  # w / mean(w) sums to T (a dot product costs a third of a mean on a CPU)

    @torch.no_grad()
    def on_epoch_end(self, train_losses: Tensor) -> None:
        if self._epoch:
            g_sum, target_sum, counted = self._epoch_sums()
            steps = counted.clamp_min(1.0)
            self._last_g, self._last_target = g_sum / steps, target_sum * self._target_scale / steps
        self._epoch.clear()

    def _epoch_sums(self) -> tuple[Tensor, Tensor, Tensor]:
        g, target, counted = (torch.stack(series).sum(dim=0) for series in zip(*self._epoch, strict=True))
        return g, target, counted

    def weights(self) -> Tensor:
        return self.w.detach().clone()

    def report(self) -> dict[str, Tensor]:
        """``grad_norm`` and ``grad_norm_target`` are the epoch's mean G_i and mean target."""
        return {
            "weight": self.weights(),
            "grad_norm": self._last_g.clone(),
            "grad_norm_target": self._last_target.clone(),
        }
