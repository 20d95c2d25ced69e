"""The contract every registered loss-weighting strategy keeps, run against each of them."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.tuner.weighting.host_reads import no_host_reads
from tuner import gradients
from tuner.config import TrainConfig
from tuner.problems import Problem
from tuner.train import build, resolve_config, train, train_step
from tuner.weighting import STRATEGIES, WeightingStrategy, build_strategy

NAMES = sorted(STRATEGIES)
STEP_HOOKS = ("combine", "after_backward", "after_step", "on_epoch_end")


def _strategy(problem: Problem, name: str) -> WeightingStrategy:
    return build_strategy(problem.tasks, TrainConfig(strategy=name))


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with no_host_reads():
            return method(*args, **kwargs)

    return call


@pytest.mark.parametrize("name", NAMES)
def test_combine_is_a_finite_scalar_that_trains_every_task(tiny: Problem, name: str) -> None:
    strategy = _strategy(tiny, name)
    losses = torch.tensor([0.7, 2.5, 1.1], requires_grad=True)
    total = strategy.combine(losses)
    assert total.shape == ()
    assert math.isfinite(float(total.detach()))
    assert total.requires_grad
    total.backward()
    assert losses.grad is not None
    assert bool(torch.all(losses.grad > 0)), f"every task's loss must push the total up, got {losses.grad}"


@pytest.mark.parametrize("name", NAMES)
def test_weights_and_report(tiny: Problem, name: str) -> None:
    strategy = _strategy(tiny, name)
    weights = strategy.weights()
    assert weights.shape == (3,)
    assert not weights.requires_grad
    assert bool(torch.all(weights > 0))
    report = strategy.report()
    assert "weight" in report
    assert torch.equal(report["weight"], weights)
    for series in report.values():
        assert series.shape == (3,)


@pytest.mark.parametrize("name", NAMES)
def test_a_short_training_run_reports_every_epoch(tiny: Problem, name: str) -> None:
    seen: list[int] = []
    result = train(
        tiny, TrainConfig(strategy=name, epochs=3), device="cpu", on_epoch_end=lambda r: seen.append(r.epoch)
    )
    assert seen == [0, 1, 2]
    assert math.isfinite(result.objective)
    assert set(result.final.tasks) == {"a", "b", "c"}
    for task in result.final.tasks.values():
        assert task.weight > 0
        assert math.isfinite(task.train_loss) and math.isfinite(task.val_loss) and math.isfinite(task.metric)
    # The run learns something: the objective (validation loss over the untrained one) falls below 1.
    assert result.objective < 1.0


@pytest.mark.parametrize("name", NAMES)
def test_step_hooks_never_read_tensors_on_the_host(tiny: Problem, name: str) -> None:
    config = resolve_config(tiny, TrainConfig(strategy=name))
    run = build(tiny, config, torch.device("cpu"))
    strategy = run.strategy
    for hook in STEP_HOOKS:
        setattr(strategy, hook, _guarded(getattr(strategy, hook)))
    split = tiny.load().train
    for epoch in range(3):  # DWA changes its weights only from the third epoch on
        for start in (0, 32):
            losses = train_step(run, *split.take(torch.arange(start, start + 32)))
        strategy.on_epoch_end(losses)
        assert epoch == 0 or bool(torch.all(strategy.weights() > 0))


def test_the_host_read_guard_catches_item_and_python_branching() -> None:
    t = torch.ones(2)
    with no_host_reads(), pytest.raises(AssertionError):
        t.sum().item()
    with no_host_reads(), pytest.raises(AssertionError):
        if t.sum() > 0:
            pass
    assert t.sum().item() == 2.0


@pytest.mark.parametrize("name", NAMES)
def test_step_code_has_no_host_transfers(name: str) -> None:
    cls = STRATEGIES[name]
    sources = [inspect.getsource(getattr(cls, hook)) for hook in STEP_HOOKS]
    if cls.needs_grad_norms:
        sources.append(inspect.getsource(gradients))
    for source in sources:
        for call in (".item(", ".cpu(", ".numpy(", ".tolist("):
            assert call not in source, f"{name}: {call} in\n{source}"
