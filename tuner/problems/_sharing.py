"""Hard parameter sharing, as a ready-made model for problems that want one: a shared trunk, one head per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from tuner.config import Chain
from tuner.problems._task import Task


def mlp(in_dim: int, hidden: int, depth: int, dropout: float = 0.0) -> nn.Sequential:
    """``depth`` ReLU layers of width ``hidden`` (dropout after each when given)."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    return nn.Sequential(*layers)


class SharedBottom(nn.Module):
    """``shared`` maps the inputs to a ``width``-wide representation; ``heads[task]`` is a linear head per task.

    With a chain, the target's head also reads the source's prediction feature (probabilities for classification,
    the estimate for regression), through ``chain.feed``: ``detach`` stops that gradient.
    """

    def __init__(self, tasks: Sequence[Task], shared: nn.Module, width: int, chain: Chain | None = None) -> None:
        super().__init__()
        self.tasks = {t.name: t for t in tasks}
        self.shared = shared
        self.chain = chain
        extra = {chain.target: self.tasks[chain.source].out_dim} if chain is not None else {}
        self.heads = nn.ModuleDict({t.name: nn.Linear(width + extra.get(t.name, 0), t.out_dim) for t in tasks})

    def forward(self, inputs: Tensor) -> Mapping[str, Tensor]:
        rep = self.shared(inputs)
        out: dict[str, Tensor] = {}
        chain = self.chain
        if chain is not None:  # the source first: the target reads its prediction
            out[chain.source] = self.heads[chain.source](rep)
        for name, head in self.heads.items():
            if name in out:
                continue
            if chain is not None and name == chain.target:
                feature = self.tasks[chain.source].prediction_feature(out[chain.source])
                out[name] = head(torch.cat([rep, chain.feed(feature)], dim=-1))
            else:
                out[name] = head(rep)
        return out
