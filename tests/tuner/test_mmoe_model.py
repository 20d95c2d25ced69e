"""An MMoE-style model (shared experts, a gate and a tower per task) plugs in through the public interface alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from tuner.config import Chain, TrainConfig
from tuner.gradients import task_grad_norms
from tuner.problems import Dataset, Defaults, ParameterGroups, Problem, Split, Task
from tuner.train import build, resolve_config, train


class MMoE(nn.Module):
    """Ma et al. 2018: experts shared by every task; each task mixes them with its own softmax gate."""

    def __init__(self, tasks: list[str], in_dim: int, experts: int, width: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(in_dim, width), nn.ReLU()) for _ in range(experts))
        self.gates = nn.ModuleDict({t: nn.Linear(in_dim, experts) for t in tasks})
        self.towers = nn.ModuleDict({t: nn.Linear(width, 1) for t in tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outs = torch.stack([expert(x) for expert in self.experts], dim=1)  # B x E x W
        mixed = {t: (gate(x).softmax(dim=-1).unsqueeze(-1) * outs).sum(dim=1) for t, gate in self.gates.items()}
        return {t: tower(mixed[t]) for t, tower in self.towers.items()}


class MMoEProblem(Problem):
    name: ClassVar[str] = "mmoe-toy"

    @property
    def tasks(self) -> list[Task]:
        return [Task("a", "regression"), Task("b", "binary", metric="auc")]

    def load(self) -> Dataset:
        g = torch.Generator().manual_seed(self.options.seed)
        x = torch.randn(300, 5, generator=g)
        ys = {"a": x[:, :2].sum(dim=1, keepdim=True), "b": (x[:, 2:3] > 0).float()}
        return Dataset(
            train=Split(x[:200], {k: v[:200] for k, v in ys.items()}),
            val=Split(x[200:], {k: v[200:] for k, v in ys.items()}),
        )

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return MMoE(self.task_names, 5, experts=3, width=8)

    def parameter_groups(self, model: nn.Module) -> ParameterGroups:
        assert isinstance(model, MMoE)
        own = {t: [*model.gates[t].parameters(), *model.towers[t].parameters()] for t in self.task_names}
        return ParameterGroups(shared=list(model.experts.parameters()), tasks=own)

    def last_shared_layer(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, MMoE)
        return model.experts  # every expert's layer together: a module holding parameters is enough

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, batch_size=50, epochs=3)


@pytest.mark.parametrize("strategy", ["equal", "uncertainty", "gradnorm", "dwa"])
def test_an_mmoe_model_trains_under_every_kind_of_strategy(strategy: str) -> None:
    result = train(MMoEProblem.create(), TrainConfig(strategy=strategy), device="cpu")
    assert result.objective < 1.0
    assert 0.0 <= result.final.tasks["b"].metric <= 1.0


def test_the_gates_get_their_tasks_learning_rates_and_gradnorm_reads_every_expert() -> None:
    problem = MMoEProblem.create()
    run = build(problem, resolve_config(problem, TrainConfig(lr_head={"b": 0.5})), torch.device("cpu"))
    groups = {g["name"]: g for g in run.optimizer.param_groups}
    assert groups["head:b"]["lr"] == 0.5 and any(p is run.model.gates["b"].weight for p in groups["head:b"]["params"])
    x, ys = problem.load().train.take(slice(0, 50))
    outputs = run.model(x)
    losses = torch.stack([t.compute_loss(outputs[t.name], ys[t.name]) for t in problem.tasks])
    params = list(problem.last_shared_layer(run.model).parameters())
    expected = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        expected.append(torch.cat([g.flatten() for g in grads]).norm())
    norms = task_grad_norms(losses, params)
    assert torch.allclose(norms, torch.stack(expected), rtol=1e-5)
