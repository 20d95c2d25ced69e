"""Geometric loss strategy.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy
for Multi-Task Learning", CVPR Workshops 2019 (https://arxiv.org/abs/1904.08492).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from tuner.problems import Task
from tuner.weighting._base import WeightingStrategy


class GLS(WeightingStrategy):
    """The geometric mean of the task losses, (prod_i L_i)^(1/T), computed as exp(mean_i log L_i) so that the
    product of many large or small losses neither overflows nor underflows.

    Its gradient with respect to L_i is GLS / (T L_i): every task's gradient is divided by its own loss, so scaling
    one task's loss by a constant scales the whole step by a constant and leaves its direction unchanged. A task
    whose loss is exactly 0 in a batch (a ``Masked`` task without a defined row there) is left out of that step's
    mean: it would otherwise zero the product and make every gradient 0 * inf = NaN. The losses must not be
    negative (their logarithm is NaN). ``weights()`` is the last step's GLS / (T L_i) (1/T before the first).
    """

    name: ClassVar[str] = "gls"
    description: ClassVar[str] = "geometric loss strategy: geometric mean of the losses (Chennupati et al., 2019)"
    _uniform: Tensor

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.register_buffer("_uniform", torch.full((self.n_tasks,), 1.0 / self.n_tasks), persistent=False)
        # The last step's losses, GLS and count of present tasks, for weights(): one plain attribute, since
        # nn.Module's handling of buffer assignments costs more than the step's arithmetic on T numbers.
        self._last: tuple[Tensor, Tensor, Tensor] | None = None

    def combine(self, losses: Tensor) -> Tensor:
        present = losses != 0
        # log(1) = 0 for a missing task: its gradient is 0, not 0 * inf; the mean runs over the present ones.
        log_losses = torch.where(present, losses, 1.0).log()
        count = present.sum().clamp_min(1)
        total = (log_losses.sum() / count).exp()
        self._last = (losses.detach(), total.detach(), count)
        return total

    def weights(self) -> Tensor:
        """GLS / (T' L_i) for the T' tasks present in the last step, 0 for the others."""
        if self._last is None:
            return self._uniform.clone()
        losses, total, count = self._last
        present = losses != 0
        ratio = total / (count * torch.where(present, losses, 1.0))
        return torch.where(present, ratio, 0.0).detach()
