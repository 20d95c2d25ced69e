"""One optimizer, one param group per part, each with its own learning rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

from tuner.config import Chain, TrainConfig
from tuner.optim import lr_factor
from tuner.problems import ParameterGroups, Problem, ProblemError
from tuner.train import build, resolve_config, train

from .conftest import TinyMixed


def _groups(problem: Problem, **config: object) -> dict[str, dict[str, object]]:
    resolved = resolve_config(problem, TrainConfig.model_validate(config))
    run = build(problem, resolved, torch.device("cpu"))
    return {g["name"]: g for g in run.optimizer.param_groups}


def test_groups_and_their_learning_rates(tiny: Problem) -> None:
    groups = _groups(tiny, strategy="uncertainty", lr_shared=0.1, lr_heads=0.2, lr_head={"b": 0.3}, lr_weighting=0.4)
    assert list(groups) == ["shared", "head:a", "head:b", "head:c", "weighting"]
    assert [groups[n]["lr"] for n in groups] == [0.1, 0.2, 0.3, 0.2, 0.4]
    assert groups["weighting"]["weight_decay"] == 0.0


def test_per_task_head_rates_reach_their_heads(tiny: Problem) -> None:
    resolved = resolve_config(tiny, TrainConfig(lr_head={"a": 0.5, "c": 0.0}))
    run = build(tiny, resolved, torch.device("cpu"))
    for task in tiny.tasks:
        (group,) = [g for g in run.optimizer.param_groups if g["name"] == f"head:{task.name}"]
        assert {id(p) for p in group["params"]} == {id(p) for p in run.model.heads[task.name].parameters()}
        assert group["lr"] == {"a": 0.5, "c": 0.0}.get(task.name, tiny.defaults.lr_heads)
    assert "weighting" not in {g["name"] for g in run.optimizer.param_groups}  # equal has nothing to learn


def test_every_parameter_is_in_exactly_one_group(tiny: Problem) -> None:
    resolved = resolve_config(tiny, TrainConfig(strategy="gradnorm"))
    run = build(tiny, resolved, torch.device("cpu"))
    grouped = [id(p) for g in run.optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in [*run.model.parameters(), *run.strategy.parameters()])


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_choice(tiny: Problem, name: str, cls: type) -> None:
    resolved = resolve_config(tiny, TrainConfig(optimizer=name, momentum=0.8, weight_decay=0.01))
    optimizer = build(tiny, resolved, torch.device("cpu")).optimizer
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.8


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_a_group_with_learning_rate_zero_does_not_move(tiny: Problem, optimizer: str) -> None:
    config = TrainConfig(optimizer=optimizer, lr_shared=0.0, lr_head={"b": 0.0}, weight_decay=0.01, epochs=2)
    initial = build(tiny, resolve_config(tiny, config), torch.device("cpu")).model
    result = train(tiny, config, device="cpu")
    assert result.model is not None
    before, after = initial.state_dict(), result.model.state_dict()
    for key in before:
        frozen = key.startswith(("shared.", "heads.b."))
        assert torch.equal(before[key], after[key]) == frozen, key


class _Owned(TinyMixed):
    """The tiny problem with a parameter outside ``shared`` and ``heads``, and groups declared by hand."""

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        model = super().build_model(knobs, chain)
        model.register_parameter("stray", nn.Parameter(torch.zeros(1)))
        return model


def test_a_parameter_in_no_group_or_in_two_is_refused_with_its_name() -> None:
    problem = _Owned.create()
    with pytest.raises(ProblemError, match="parameter 'stray' is in no group"):
        build(problem, resolve_config(problem, TrainConfig()), torch.device("cpu"))

    class Twice(_Owned):
        def parameter_groups(self, model: nn.Module) -> ParameterGroups:
            groups = super().parameter_groups(model)
            return ParameterGroups(
                [*groups.shared, model.stray], {**groups.tasks, "b": list(model.heads["a"].parameters())}
            )

    problem = Twice.create()
    with pytest.raises(ProblemError, match=r"parameter 'heads\.a\.weight' is in two groups: head:a and head:b"):
        build(problem, resolve_config(problem, TrainConfig()), torch.device("cpu"))


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        ("constant", 0.0, [1.0, 1.0, 1.0, 1.0]),
        ("constant", 0.5, [0.5, 1.0, 1.0, 1.0]),
        ("linear", 0.0, [1.0, 0.75, 0.5, 0.25]),
        ("cosine", 0.5, [0.5, 1.0, 1.0, 0.5]),
    ],
)
def test_learning_rate_schedules(schedule: str, warmup: float, expected: list[float]) -> None:
    config = TrainConfig.model_validate({"schedule": schedule, "warmup": warmup})
    assert [lr_factor(config, step, 4) for step in range(4)] == pytest.approx(expected)


def test_the_schedule_reaches_the_optimizer_every_step(tiny: Problem, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    step = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    train(tiny, TrainConfig(optimizer="sgd", schedule="linear", epochs=2, lr_shared=0.1), device="cpu")
    # 160 samples in batches of 32: 5 steps an epoch, 10 in all, decaying linearly from 0.1.
    assert seen == pytest.approx([0.1 * (1 - k / 10) for k in range(10)])


def test_gradient_clipping_bounds_the_step(tiny: Problem) -> None:
    config = TrainConfig(optimizer="sgd", momentum=0.0, lr_shared=1.0, lr_heads=1.0, epochs=1, batch_size=160)
    before = build(tiny, resolve_config(tiny, config), torch.device("cpu")).model
    moved = {}
    for clip in (None, 1e-3):
        result = train(tiny, config.model_copy(update={"clip_grad": clip}), device="cpu")
        assert result.model is not None
        deltas = [(a - b).flatten() for a, b in zip(result.model.parameters(), before.parameters(), strict=True)]
        moved[clip] = float(torch.cat(deltas).detach().norm())
    # One SGD step at lr 1: the parameters move by exactly the clipped gradient's norm.
    assert moved[1e-3] == pytest.approx(1e-3, rel=1e-4)
    assert moved[None] > 10 * moved[1e-3]
