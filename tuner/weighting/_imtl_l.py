"""Impartial multi-task learning, its loss balance (IMTL-L).

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021
(https://openreview.net/forum?id=IMPnRXEWpvr).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from tuner.problems import Task
from tuner.weighting._base import WeightingStrategy


class IMTLL(WeightingStrategy):
    """Learns s_i per task and trains on sum_i (e^{s_i} L_i - s_i).

    The loss's gradient in s_i is e^{s_i} L_i - 1: the learned scale drives every scaled loss e^{s_i} L_i toward 1,
    whatever the task's raw loss scale, so the tasks weigh in impartially. Unlike uncertainty weighting, the
    regulariser is s_i itself and the loss is not halved, so the fixed point is e^{s_i} = 1 / L_i for every task
    kind. The s_i are parameters of the optimizer's ``weighting`` group (rate ``lr_weighting``).
    """

    name: ClassVar[str] = "imtl-l"
    description: ClassVar[str] = "IMTL-L: learned scales e^s L - s, scaled losses toward 1 (Liu et al., ICLR 2021)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.log_scale = nn.Parameter(torch.zeros(self.n_tasks))

    def combine(self, losses: Tensor) -> Tensor:
        return torch.dot(torch.exp(self.log_scale), losses) - self.log_scale.sum()

    def weights(self) -> Tensor:
        return torch.exp(self.log_scale).detach()
