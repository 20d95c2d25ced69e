"""The one interface every loss-weighting strategy implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from tuner.config import TrainConfig
from tuner.problems import Task


class WeightingStrategy(nn.Module, ABC):
    """Turns the per-task losses of a step into the loss that is backpropagated.

    The training loop calls, every step: ``combine(losses)`` -> ``backward()`` -> ``after_backward(losses, norms)``
    -> ``optimizer.step()`` -> ``after_step()``; and ``on_epoch_end(mean_train_losses)`` once per epoch. Learnable
    weights are this module's parameters; they go to the optimizer's ``weighting`` group. Nothing here may read a
    tensor's value on the host inside a step (no ``.item()``): that would stall a GPU every step.
    """

    name: ClassVar[str]
    #: Whether ``after_backward`` needs each task's gradient norm ||grad_W L_i|| on the last shared layer W.
    needs_grad_norms: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.n_tasks = len(self.tasks)

    @classmethod
    def from_config(cls, tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
        return cls(tasks)

    @abstractmethod
    def combine(self, losses: Tensor) -> Tensor:
        """The scalar to backpropagate, from the step's per-task losses (shape T)."""

    @abstractmethod
    def weights(self) -> Tensor:
        """The current effective per-task loss weights (shape T, detached)."""

    def after_backward(self, losses: Tensor, grad_norms: Tensor | None) -> None:
        """Called after ``backward()`` and before the optimizer step; ``grad_norms`` (shape T) when requested."""

    def after_step(self) -> None:
        """Called after the optimizer step."""

    def on_epoch_end(self, train_losses: Tensor) -> None:
        """Called with the epoch's mean training loss per task (shape T)."""

    def report(self) -> dict[str, Tensor]:
        """Per-task series to record every epoch: always ``weight``; ``sigma`` or ``grad_norm`` where they exist."""
        return {"weight": self.weights()}
