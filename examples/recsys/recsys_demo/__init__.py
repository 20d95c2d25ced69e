"""A recommender-style mtl-tune plugin: id embeddings, a shared bottom MLP and one tower per task.

Tasks: ``click`` and ``conversion`` (binary, AUC) and ``dwell`` (a regression defined only on clicked rows). The
conversion tower reads p(click) through the run's chain: ``detach`` stops that gradient, so the conversion loss
never trains the click tower. The data are synthetic and drawn from ``options.seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from tuner.config import Chain
from tuner.problems import Dataset, Defaults, Knob, Masked, ParameterGroups, Problem, ProblemOptions, Split, Task

N_DENSE = 4
LATENT = 4


class RecsysOptions(ProblemOptions):
    users: int = Field(200, ge=2)
    items: int = Field(50, ge=2)
    n_train: int = Field(4000, ge=10)
    n_val: int = Field(1000, ge=10)


class Tower(nn.Module):
    """One task's MLP over the shared representation (plus, for a chained target, the source's probability)."""

    def __init__(self, width: int, extra: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width + extra, width // 2), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(width // 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.net(x))


class RecsysModel(nn.Module):
    def __init__(self, opts: RecsysOptions, knobs: Mapping[str, Any], chain: Chain | None) -> None:
        super().__init__()
        dim, hidden, dropout = knobs["embedding_dim"], knobs["hidden"], knobs["dropout"]
        self.user = nn.Embedding(opts.users, dim)
        self.item = nn.Embedding(opts.items, dim)
        self.bottom = nn.Sequential(
            nn.Linear(2 * dim + N_DENSE, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.chain = chain
        self.click = Tower(hidden, 0, dropout)
        self.conversion = Tower(hidden, 1 if chain else 0, dropout)
        self.dwell = Tower(hidden, 0, dropout)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x = torch.cat([self.user(inputs["user"]), self.item(inputs["item"]), inputs["dense"]], dim=-1)
        rep = self.bottom(x)
        click = self.click(rep)
        # The conversion tower sees p(click); chain.feed stops its gradient when the chain's mode is detach.
        conv_in = torch.cat([rep, self.chain.feed(click.sigmoid())], dim=-1) if self.chain else rep
        return {"click": click, "conversion": self.conversion(conv_in), "dwell": self.dwell(rep)}


class RecsysDemo(Problem):
    """Click, conversion and dwell time of synthetic user-item impressions."""

    name: ClassVar[str] = "recsys-demo"
    description: ClassVar[str] = "click and conversion (AUC) and dwell on clicks (masked regression) of user-item pairs"
    Options = RecsysOptions
    model_knobs: ClassVar[Mapping[str, Knob]] = {
        "embedding_dim": Knob(16, choices=(8, 16, 32), help="size of the user and item embeddings"),
        "hidden": Knob(64, low=32, high=128, help="width of the shared bottom"),
        "dropout": Knob(0.1, low=0.0, high=0.3, help="dropout in the bottom and the towers"),
    }
    #: The (source, target) chain the model supports; a run's ``--chain click:conversion:MODE`` picks the mode.
    chains = (("click", "conversion"),)

    @property
    def opts(self) -> RecsysOptions:
        assert isinstance(self.options, RecsysOptions)
        return self.options

    @property
    def tasks(self) -> list[Task]:
        return [
            Task("click", "binary", metric="auc"),
            Task("conversion", "binary", metric="auc"),
            Task("dwell", "regression", metric="rmse"),
        ]

    def load(self) -> Dataset:
        g = torch.Generator().manual_seed(self.options.seed)
        world = (torch.randn(self.opts.users, LATENT, generator=g), torch.randn(self.opts.items, LATENT, generator=g))
        return Dataset(train=self._draw(self.opts.n_train, world, g), val=self._draw(self.opts.n_val, world, g))

    def _draw(self, n: int, world: tuple[Tensor, Tensor], g: torch.Generator) -> Split:
        users = torch.randint(0, self.opts.users, (n,), generator=g)
        items = torch.randint(0, self.opts.items, (n,), generator=g)
        dense = torch.randn(n, N_DENSE, generator=g)
        u, v = world[0][users], world[1][items]
        affinity = (u * v).sum(-1) / LATENT**0.5 + 0.5 * dense[:, 0]
        click = torch.bernoulli(torch.sigmoid(2 * affinity - 1), generator=g)
        buys = torch.bernoulli(torch.sigmoid(2 * (u[:, 0] + v[:, 1]) + dense[:, 1]), generator=g)
        dwell = F.softplus(affinity + dense[:, 2]) + 0.3 * torch.randn(n, generator=g)
        inputs = {"user": users, "item": items, "dense": dense}
        # Dwell time exists only where the user clicked: the loss and the metric see those rows only.
        targets: dict[str, Tensor | Masked] = {
            "click": click,
            "conversion": click * buys,
            "dwell": Masked(dwell[:, None], click.bool()),
        }
        return Split(inputs, targets)

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return RecsysModel(self.opts, knobs, chain)

    def parameter_groups(self, model: nn.Module) -> ParameterGroups:
        assert isinstance(model, RecsysModel)
        shared = [*model.user.parameters(), *model.item.parameters(), *model.bottom.parameters()]
        return ParameterGroups(shared, {t: list(getattr(model, t).parameters()) for t in self.task_names})

    def last_shared_layer(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, RecsysModel)
        # GradNorm balances the tasks' gradients on the bottom's last linear layer: the last one they all share.
        return [m for m in model.bottom if isinstance(m, nn.Linear)][-1]

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=3e-3, lr_heads=3e-3, batch_size=256, epochs=5)
