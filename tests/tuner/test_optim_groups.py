"""One optimizer, one param group per part, each with its own learning rate."""

from __future__ import annotations

import pytest
import torch

from tuner.config import TrainConfig
from tuner.optim import build_optimizer
from tuner.problems import Problem
from tuner.train import build, resolve_config, train


def _groups(problem: Problem, **config: object) -> dict[str, dict[str, object]]:
    resolved = resolve_config(problem, TrainConfig.model_validate(config))
    _, _, optimizer = build(problem, resolved, torch.device("cpu"))
    return {g["name"]: g for g in optimizer.param_groups}


def test_groups_and_their_learning_rates(tiny: Problem) -> None:
    groups = _groups(tiny, strategy="uncertainty", lr_shared=0.1, lr_heads=0.2, lr_head={"b": 0.3}, lr_weighting=0.4)
    assert list(groups) == ["shared", "head:a", "head:b", "head:c", "weighting"]
    assert [groups[n]["lr"] for n in groups] == [0.1, 0.2, 0.3, 0.2, 0.4]
    assert groups["weighting"]["weight_decay"] == 0.0


def test_per_task_head_rates_reach_their_heads(tiny: Problem) -> None:
    resolved = resolve_config(tiny, TrainConfig(lr_head={"a": 0.5, "c": 0.0}))
    model, _, optimizer = build(tiny, resolved, torch.device("cpu"))
    for task, head in zip(tiny.tasks, model.heads, strict=True):
        (group,) = [g for g in optimizer.param_groups if g["name"] == f"head:{task.name}"]
        assert {id(p) for p in group["params"]} == {id(p) for p in head.parameters()}
        assert group["lr"] == {"a": 0.5, "c": 0.0}.get(task.name, tiny.defaults.lr_heads)
    assert "weighting" not in {g["name"] for g in optimizer.param_groups}  # equal has nothing to learn


def test_every_parameter_is_in_exactly_one_group(tiny: Problem) -> None:
    resolved = resolve_config(tiny, TrainConfig(strategy="gradnorm"))
    model, strategy, optimizer = build(tiny, resolved, torch.device("cpu"))
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in [*model.parameters(), *strategy.parameters()])


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_choice(tiny: Problem, name: str, cls: type) -> None:
    resolved = resolve_config(tiny, TrainConfig(optimizer=name, momentum=0.8, weight_decay=0.01))
    model, strategy, _ = build(tiny, resolved, torch.device("cpu"))
    optimizer = build_optimizer(model, strategy, resolved)
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.8


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_a_group_with_learning_rate_zero_does_not_move(tiny: Problem, optimizer: str) -> None:
    config = TrainConfig(optimizer=optimizer, lr_shared=0.0, lr_head={"b": 0.0}, weight_decay=0.01, epochs=2)
    initial, _, _ = build(tiny, resolve_config(tiny, config), torch.device("cpu"))
    result = train(tiny, config, device="cpu")
    assert result.model is not None
    before, after = initial.state_dict(), result.model.state_dict()
    for key in before:
        frozen = key.startswith(("trunk.", "heads.1."))
        assert torch.equal(before[key], after[key]) == frozen, key
