"""Task chaining (source's estimate as a feature of the target), with the library's ``Chain.feed`` helper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuner.config import Chain, ConfigError, TrainConfig
from tuner.problems import Problem, ProblemError
from tuner.train import build, resolve_config


def _model(problem: Problem, chain: Chain | None) -> nn.Module:
    config = resolve_config(problem, TrainConfig(chain=chain))
    return build(problem, config, torch.device("cpu")).model


def _target_loss_grads(problem: Problem, mode: str) -> nn.Module:
    """Backpropagate the target task ("a") alone; the source is the classification task "c"."""
    model = _model(problem, Chain(source="c", target="a", mode=mode))
    split = problem.load().train
    problem.task("a").compute_loss(model(split.inputs)["a"], split.targets["a"]).backward()
    return model


def _grad_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_detach_gives_the_source_head_exactly_zero_gradient_from_the_target(tiny: Problem) -> None:
    model = _target_loss_grads(tiny, "detach")
    assert _grad_norm(model.heads["c"]) == 0.0
    assert _grad_norm(model.heads["a"]) > 0  # the target itself still learns
    assert _grad_norm(model.shared) > 0  # through its own head


def test_through_lets_the_target_train_the_source_head(tiny: Problem) -> None:
    model = _target_loss_grads(tiny, "through")
    assert _grad_norm(model.heads["c"]) > 0


def test_the_target_head_reads_the_source_prediction(tiny: Problem) -> None:
    model = _model(tiny, Chain(source="c", target="a"))
    assert model.heads["a"].in_features == 16 + 3  # the trunk's width plus c's class probabilities
    assert model.heads["b"].in_features == 16
    assert _model(tiny, Chain(source="c", target="a", mode="none")).heads["a"].in_features == 16


def test_feed_stops_the_gradient_only_for_detach() -> None:
    x = torch.ones(3, requires_grad=True)
    assert not Chain(source="a", target="b", mode="detach").feed(x).requires_grad
    assert Chain(source="a", target="b", mode="through").feed(x) is x
    with pytest.raises(ValueError, match="feeds nothing"):
        Chain(source="a", target="b", mode="none").feed(x)


def test_a_chain_naming_an_unknown_task_or_an_unsupported_pair_is_refused(tiny: Problem) -> None:
    with pytest.raises(ProblemError, match="'zz'"):
        _model(tiny, Chain(source="zz", target="a"))
    with pytest.raises(ConfigError, match="does not support b:a; it offers c:a"):
        _model(tiny, Chain(source="b", target="a"))
    with pytest.raises(ValueError, match="same task"):
        Chain(source="a", target="a")
    assert Chain.parse("c:a:through") == Chain(source="c", target="a", mode="through")
    assert Chain.parse("c:a").mode == "detach"
