"""Fixed weights: ``equal`` (every task weight 1) and ``static`` (per-task weights from the configuration)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from tuner.config import ConfigError, TrainConfig
from tuner.problems import Task
from tuner.weighting._base import WeightingStrategy


class Equal(WeightingStrategy):
    """The plain sum of the task losses."""

    name: ClassVar[str] = "equal"
    description: ClassVar[str] = "every task weight 1 (the baseline)"
    _weights: Tensor

    def __init__(self, tasks: Sequence[Task], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks)
        values = [1.0] * self.n_tasks
        names = [t.name for t in self.tasks]
        for task_name, value in (weights or {}).items():
            if task_name not in names:
                raise ConfigError(f"weights: unknown task {task_name!r}; tasks: {names}")
            values[names.index(task_name)] = float(value)
        self.register_buffer("_weights", torch.tensor(values))

    def combine(self, losses: Tensor) -> Tensor:
        return (self._weights * losses).sum()

    def weights(self) -> Tensor:
        return self._weights.detach().clone()


class Static(Equal):
    """Hand-set per-task weights (``--weights a=1,b=2``); tasks not named keep weight 1."""

    name: ClassVar[str] = "static"
    description: ClassVar[str] = "fixed per-task weights (searched per task as weight_<task>)"

    @classmethod
    def from_config(cls, tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
        return cls(tasks, config.weights)
