"""Hard parameter sharing: one shared trunk, one head per task, optional chaining of one task into another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tuner.config import Chain
from tuner.problems import ProblemError, Task, Trunk


@dataclass
class SharedTap:
    """What GradNorm needs to get every task's gradient on the last shared layer from one backward pass.

    ``pre`` is that layer's output fanned out per task (T x B x D, its ``.grad`` is filled by ``backward()``);
    ``inputs`` is the layer's input (B x E).
    """

    inputs: Tensor
    pre: Tensor


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
        h = self.trunk.body(x)
        pre = self.trunk.last(h)
        shared_tap = None
        if tap:
            # A per-task copy of the last shared layer's output: one backward then leaves each task's gradient
            # separately in fanned.grad, instead of one autograd call per task.
            fanned = pre.expand(len(self.tasks), *pre.shape)
            fanned.retain_grad()
            reps: Sequence[Tensor] = self.trunk.activation(fanned).unbind(0)
            shared_tap = SharedTap(inputs=h, pre=fanned)
        else:
            rep = self.trunk.activation(pre)
            reps = [rep] * len(self.tasks)
        outputs: list[Tensor | None] = [None] * len(self.tasks)
        for i in self._order:
            head_in = reps[i]
            if i == self._target:
                source_out = outputs[self._source]
                assert source_out is not None and self.chain is not None
                feature = self.tasks[self._source].prediction_feature(source_out)
                if self.chain.mode == "detach":
                    feature = feature.detach()
                head_in = torch.cat([head_in, feature], dim=-1)
            outputs[i] = self.heads[i](head_in)
        return Forward([o for o in outputs if o is not None], shared_tap)
