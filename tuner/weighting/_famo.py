"""Fast Adaptive Multitask Optimization.

Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(https://arxiv.org/abs/2306.03792); official code: https://github.com/Cranial-XIX/FAMO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tuner.config import ConfigError
from tuner.problems import Knob, Task
from tuner.weighting._base import WeightingStrategy

#: Added to every loss before its logarithm (the paper's and the official code's epsilon).
EPSILON = 1e-8
#: Adam's constants for the logits' update, as in the official code (``torch.optim.Adam``'s defaults).
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


@dataclass(slots=True)
class _LastStep:
    """What the next step needs of the last one: its log-losses and z (for delta and the Jacobian), its weights
    (for ``weights()``) and the count of the logits' Adam steps (host-side: the bias corrections are Python
    floats). Plain attributes: they change every step, and ``nn.Module``'s attribute handling would cost more than
    the arithmetic on T numbers."""

    log_losses: Tensor | None = None
    z: Tensor | None = None
    w: Tensor | None = None
    updates: int = 0


class FAMO(WeightingStrategy):
    """Balances the tasks' rates of log-loss decrease at O(1) cost per step (the paper's Algorithm 1).

    Logits xi (zero at the start) give z = softmax(xi). A step descends c sum_i z_i log(L_i - L*_i + eps), with
    c = (sum_i z_i / (L_i - L*_i + eps))^-1 held constant: task i's loss gets the weight
    w_i = c z_i / (L_i - L*_i + eps) (the weights sum to 1). The minimum losses L* are 0 and eps = 1e-8, as in the
    official code, so the losses must not be negative. The scalar backpropagated is sum_i w_i L_i with w held
    constant (w = softmax(xi - log(L + eps)) in one operation): the same gradient as the paper's objective, with no
    logarithm in the graph.

    After the step the logits move against J_z^T delta + gamma xi, with delta_i = log L_i(before the step) -
    log L_i(after it) and J_z the softmax's Jacobian (J_z^T delta = z * (delta - z . delta)): a task whose log-loss
    fell less than the others' gains weight. Adam steps that gradient with learning rate ``weight_lr``, as the
    official code does (its 0.025 default is an Adam rate); ``decay`` is gamma, Adam's L2 term there.

    When "after the step" is measured: Algorithm 1 takes L_i(theta_t+1) on the step's own batch, and the official
    code runs a second forward pass on that batch after every optimizer step. A strategy sees neither the model nor
    the batch, and that pass would cost about a third of a step; so delta's second term is the next step's loss,
    L_i(theta_t+1) on the next batch, and the logits are updated at the start of that step's ``combine``, before its
    weights are formed, so every step's weights follow all earlier steps' deltas, as in Algorithm 1. With full-batch
    training the two coincide exactly. In mini-batches, delta compares two batches, each measured before the
    parameters step on it: it estimates the decrease on data the step did not fit, without the same-batch delta's
    credit for fitting its own batch, which is larger and steadier. So delta is smaller and much noisier: the logits
    adapt more slowly, and gamma, weighed against it, pulls harder toward equal weights. The first step of a run
    leaves the logits at zero.

    The logits and Adam's moments are buffers updated here, not parameters: the training optimizer (and its
    ``lr_weighting``) never sees them. The official code's clipping of the shared gradient (norm 1) is the loop's
    own ``clip_grad`` option.
    """

    name: ClassVar[str] = "famo"
    description: ClassVar[str] = "FAMO: balanced log-loss decrease, O(1) per step (Liu et al., NeurIPS 2023)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "weight_lr": Knob(0.025, low=1e-3, high=0.1, log=True, help="Adam learning rate of the task-weight logits"),
        "decay": Knob(1e-3, low=1e-4, high=1e-2, log=True, help="gamma: decay of the logits toward equal weights"),
    }
    logits: Tensor
    _exp_avg: Tensor
    _exp_avg_sq: Tensor

    def __init__(self, tasks: Sequence[Task], weight_lr: float = 0.025, decay: float = 1e-3) -> None:
        super().__init__(tasks)
        if weight_lr <= 0:
            raise ConfigError(f"strategy_options: famo's weight_lr must be > 0, got {weight_lr}")
        if decay < 0:
            raise ConfigError(f"strategy_options: famo's decay must be >= 0, got {decay}")
        self.weight_lr = weight_lr
        self.decay = decay
        t = self.n_tasks
        self.register_buffer("logits", torch.zeros(t))
        self.register_buffer("_exp_avg", torch.zeros(t))
        self.register_buffer("_exp_avg_sq", torch.zeros(t))
        self._last = _LastStep()

    def combine(self, losses: Tensor) -> Tensor:
        last, logits = self._last, self.logits
        log_losses = (losses.detach().float() + EPSILON).log()
        if last.log_losses is not None and last.z is not None:
            self._update_logits(last, last.log_losses - log_losses, last.z, logits)
        last.log_losses = log_losses
        last.z = torch.softmax(logits, dim=0)
        last.w = torch.softmax(logits - log_losses, dim=0)  # c z_i / (L_i + eps)
        return torch.dot(last.w.to(losses.dtype), losses)

    def _update_logits(self, last: _LastStep, delta: Tensor, z: Tensor, logits: Tensor) -> None:
        """One Adam step on xi against J_z^T delta + gamma xi, z being the weights of the step delta measures."""
        grad = z * (delta - torch.dot(z, delta))
        if self.decay:
            grad = grad.add(logits, alpha=self.decay)
        last.updates += 1
        bias1 = 1.0 - BETA1**last.updates
        root_bias2 = (1.0 - BETA2**last.updates) ** 0.5
        exp_avg, exp_avg_sq = self._exp_avg, self._exp_avg_sq
        exp_avg.lerp_(grad, 1.0 - BETA1)
        exp_avg_sq.lerp_(grad * grad, 1.0 - BETA2)
        # Adam's m / (sqrt(v / bias2) + eps), written as root_bias2 * m / (sqrt(v) + eps * root_bias2).
        denom = exp_avg_sq.sqrt().add_(ADAM_EPS * root_bias2)
        logits.addcdiv_(exp_avg, denom, value=-self.weight_lr * root_bias2 / bias1)

    def weights(self) -> Tensor:
        w = self._last.w
        return torch.full_like(self.logits, 1.0 / self.n_tasks) if w is None else w.detach().clone()

    def report(self) -> dict[str, Tensor]:
        """``weight``: the last step's c z_i / L_i; ``learned_weight``: z = softmax(xi)."""
        return {"weight": self.weights(), "learned_weight": torch.softmax(self.logits, dim=0)}
