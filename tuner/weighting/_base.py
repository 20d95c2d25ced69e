"""The one interface every loss-weighting strategy implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from tuner.config import ConfigError, TrainConfig
from tuner.problems import Knob, Task, knob_values

if TYPE_CHECKING:
    from tuner.gradients import TaskJacobian, TaskNorms


class WeightingStrategy(nn.Module, ABC):
    """Turns the per-task losses of a step into the loss that is backpropagated.

    The training loop calls, every step: ``combine(losses)`` -> ``backward()`` -> ``after_backward(losses, norms)``
    -> ``optimizer.step()`` -> ``after_step()``; and ``on_epoch_end(mean_train_losses)`` once per epoch. Learnable
    weights are this module's parameters; they go to the optimizer's ``weighting`` group. Nothing here may read a
    tensor's value on the host inside a step (no ``.item()``): that would stall a GPU every step.
    """

    name: ClassVar[str]
    #: One line for listings (`mtl-tune strategies`, ``GET /api/strategies``): the method and its paper.
    description: ClassVar[str] = ""
    #: The strategy's own hyperparameters, passed to ``__init__`` by name: each with its default and, where a study
    #: should search it, its default range or choices (a space file's ``strategies`` section overrides them).
    knobs: ClassVar[Mapping[str, Knob]] = {}
    #: Whether ``after_backward`` needs each task's gradient norm ||grad_W L_i|| on the last shared layer W.
    needs_grad_norms: ClassVar[bool] = False
    #: Whether the strategy runs the step's backward pass itself (``backward``) instead of the loop backpropagating
    #: ``combine``'s scalar: a gradient aggregator steps the shared parameters along a combination of every task's
    #: gradient, which is not the gradient of any one weighted loss.
    aggregates_gradients: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.n_tasks = len(self.tasks)

    @classmethod
    def from_config(cls, tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
        return cls(tasks, **cls.knob_values(config.strategy_options))

    @classmethod
    def knob_values(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every knob's value: ``given`` over the defaults; a name the strategy does not have is refused."""
        unknown, values = knob_values(cls.knobs, given)
        if unknown:
            offered = ", ".join(cls.knobs) or "none"
            raise ConfigError(f"strategy_options: {cls.name!r} has no knob {unknown!r}; its knobs: {offered}")
        return values

    @abstractmethod
    def combine(self, losses: Tensor) -> Tensor:
        """The scalar to backpropagate, from the step's per-task losses (shape T)."""

    @abstractmethod
    def weights(self) -> Tensor:
        """The current effective per-task loss weights (shape T, detached)."""

    def backward(self, losses: Tensor, jacobian: TaskJacobian, scale: Tensor | None) -> None:
        """The step's backward pass, called instead of backpropagating ``combine``'s result when
        ``aggregates_gradients``: fill every parameter's ``.grad`` from the per-task ``losses`` (shape T).

        ``jacobian`` recorded the step's forward pass and gives every task's gradient on the shared parameters
        (``jacobian.backward(losses, scale)``, which also fills the task parameters' ``.grad``). ``scale`` is the
        gradient scaler's scale (fp16) or ``None``: ``.grad`` must be left multiplied by it, as a scaled backward pass
        leaves it, for the scaler to unscale. Gradient clipping and the optimizer step follow.
        """
        raise NotImplementedError(f"strategy {self.name!r} does not run the backward pass itself")

    def after_backward(self, losses: Tensor, grad_norms: TaskNorms | None) -> None:
        """Called after ``backward()`` and before the optimizer step; ``grad_norms`` when requested."""

    def after_step(self) -> None:
        """Called after the optimizer step."""

    def on_epoch_end(self, train_losses: Tensor) -> None:
        """Called with the epoch's mean training loss per task (shape T)."""

    def report(self) -> dict[str, Tensor]:
        """Per-task series to record every epoch: always ``weight``; ``sigma`` or ``grad_norm`` where they exist."""
        return {"weight": self.weights()}
