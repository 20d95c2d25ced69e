"""Random loss weighting.

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning",
TMLR 2022 (https://arxiv.org/abs/2111.10603).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from tuner.config import TrainConfig
from tuner.problems import Task
from tuner.weighting._base import WeightingStrategy


class RLW(WeightingStrategy):
    """Every step weights the losses by lambda = softmax(z), z ~ N(0, I): the paper's main variant. The weights sum
    to 1, as in the paper (equal weighting's sum to T).

    The draw comes from a generator of its own on the losses' device, seeded from the run's seed: runs with one seed
    draw the same weights, torch's global generator (dropout, initialisation) is left alone, and nothing passes
    through the host (no draw on the CPU copied over, no synchronisation). ``weights()`` is the last step's draw
    (1/T before the first).
    """

    name: ClassVar[str] = "rlw"
    description: ClassVar[str] = "random loss weighting: softmax of a normal draw every step (Lin et al., TMLR 2022)"
    _last: Tensor

    def __init__(self, tasks: Sequence[Task], seed: int = 0) -> None:
        super().__init__(tasks)
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.register_buffer("_last", torch.full((self.n_tasks,), 1.0 / self.n_tasks), persistent=False)

    @classmethod
    def from_config(cls, tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
        return cls(tasks, seed=config.seed, **cls.knob_values(config.strategy_options))

    def _generator_on(self, device: torch.device) -> torch.Generator:
        """The run's generator on ``device``, made (and seeded) on first use there; host-side checks only."""
        generator = self._generator
        if generator is None or generator.device != device:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generator = generator
        return generator

    def combine(self, losses: Tensor) -> Tensor:
        draw = torch.randn(self.n_tasks, generator=self._generator_on(losses.device), device=losses.device)
        weights = torch.softmax(draw, dim=0)
        self._last = weights
        return torch.dot(weights.to(losses.dtype), losses)

    def weights(self) -> Tensor:
        return self._last.detach().clone()
