"""Hard parameter sharing: one shared trunk, one head per task, optional chaining of one task into another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tuner.config import Chain
from tuner.problems import ProblemError, Task, Trunk


@dataclass
class SharedTap:
    """What GradNorm needs to get every task's gradient on the last shared layer from one backward pass.

    ``inputs`` is that layer's input (B x E); ``rep`` is the shared representation (the layer's activated output)
    fanned out per task as a view (B x T x D): each head reads its own slice ``rep[:, i]``, so ``backward()`` hands
    this tap every task's gradient on it separately; ``slope`` is the activation's derivative (B x 1 x D), which
    turns those into gradients on the layer's output. Batch first, so that the T tasks' gradients form one
    B x (T * D) matrix and one matrix product serves them all.
    """

    inputs: Tensor
    rep: Tensor
    slope: Tensor
    _grads: list[Tensor] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # A hook keeps a reference to the gradient, where retain_grad() would copy T x B x D floats every step. It
        # appends to a list, not to this tap: a hook referring back to the tap would make a reference cycle that
        # keeps every step's gradients alive until Python's garbage collector runs.
        self.rep.register_hook(self._grads.append)

    def layer_output_grads(self) -> Tensor:
        """Every task's gradient on the last shared layer's output (B x T x D), after ``backward()``."""
        assert self._grads, "backward() must run before the per-task gradients are read"
        return sum(self._grads[1:], self._grads[0]) * self.slope


@dataclass
class Forward:
    outputs: list[Tensor]
    tap: SharedTap | None = None


class MultiTaskModel(nn.Module):
    """``trunk`` is shared; ``heads[i]`` maps the shared representation to task i's output.

    With a chain (source -> target, mode detach|through), the target head also reads the source's prediction
    (class probabilities or the regression value). ``detach`` applies a stop-gradient on that feature.
    """

    def __init__(self, tasks: Sequence[Task], trunk: Trunk, chain: Chain | None = None) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.trunk = trunk
        names = [t.name for t in self.tasks]
        self.chain = chain if chain is not None and chain.mode != "none" else None
        self._source = self._target = -1
        if chain is not None:
            for task_name in (chain.source, chain.target):
                if task_name not in names:
                    raise ProblemError(f"chain: unknown task {task_name!r}; tasks: {names}")
        if self.chain is not None:
            self._source, self._target = names.index(self.chain.source), names.index(self.chain.target)
        self.heads = nn.ModuleList(
            nn.Linear(trunk.out_dim + (self.tasks[self._source].out_dim if i == self._target else 0), t.out_dim)
            for i, t in enumerate(self.tasks)
        )
        # Heads are evaluated source first so the target can read the source's prediction.
        self._order = list(range(len(self.tasks)))
        if self.chain is not None:
            self._order.remove(self._source)
            self._order.insert(0, self._source)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def last_shared_layer(self) -> nn.Linear:
        return self.trunk.last

    def forward(self, x: Tensor, tap: bool = False) -> Forward:
        """Every task's output; with ``tap`` also the ``SharedTap`` that GradNorm reads after ``backward()``."""
        h = self.trunk.body(x)
        pre = self.trunk.last(h)
        rep = self.trunk.activation(pre)
        shared_tap = None
        reps: Sequence[Tensor] = [rep] * len(self.tasks)
        if tap:
            # Each head reads its own slice of an expanded view (nothing is copied): one backward then hands the tap
            # every task's gradient separately, instead of one autograd call per task.
            fanned = rep.unsqueeze(1).expand(rep.shape[0], len(self.tasks), rep.shape[1])
            reps = fanned.unbind(1)
            slope = self.trunk.activation_slope(pre, rep).unsqueeze(1)
            shared_tap = SharedTap(inputs=h, rep=fanned, slope=slope)
        outputs: list[Tensor | None] = [None] * len(self.tasks)
        for i in self._order:
            head_in = reps[i]
            if i == self._target:
                head_in = torch.cat([head_in, self._chained_feature(outputs, reps, tap)], dim=-1)
            outputs[i] = self.heads[i](head_in)
        return Forward([o for o in outputs if o is not None], shared_tap)

    def _chained_feature(self, outputs: list[Tensor | None], reps: Sequence[Tensor], tap: bool) -> Tensor:
        assert self.chain is not None
        source = self.tasks[self._source]
        if self.chain.mode == "detach":
            source_out = outputs[self._source]
            assert source_out is not None
            return source.prediction_feature(source_out).detach()
        if tap:
            # Recompute the source head on the target's copy of the representation: same value, but the target's
            # gradient through the chain then lands in the target's slice of the tap, not the source's.
            return source.prediction_feature(self.heads[self._source](reps[self._target]))
        source_out = outputs[self._source]
        assert source_out is not None
        return source.prediction_feature(source_out)
