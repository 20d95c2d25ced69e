"""``equal``, ``static`` and Dynamic Weight Average (Liu et al. 2019)."""

from __future__ import annotations

import pytest
import torch

from tuner.config import ConfigError, TrainConfig
from tuner.problems import Task
from tuner.weighting import DWA, build_strategy

TASKS = [Task("a", "regression"), Task("b", "regression"), Task("c", "classification", out_dim=3)]


def test_static_weights_come_from_the_configuration() -> None:
    strategy = build_strategy(TASKS, TrainConfig(strategy="static", weights={"a": 2.0, "c": 0.5}))
    assert torch.equal(strategy.weights(), torch.tensor([2.0, 1.0, 0.5]))
    assert float(strategy.combine(torch.tensor([1.0, 2.0, 4.0]))) == pytest.approx(2.0 + 2.0 + 2.0)
    assert float(build_strategy(TASKS, TrainConfig()).combine(torch.tensor([1.0, 2.0, 4.0]))) == 7.0


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        build_strategy(TASKS, TrainConfig(strategy="static", weights={"nope": 1.0}))
    with pytest.raises(ConfigError, match="strategy: unknown 'mystery'"):
        build_strategy(TASKS, TrainConfig(strategy="mystery"))


def test_dwa_keeps_one_for_two_epochs_then_follows_the_loss_ratios() -> None:
    dwa = DWA(TASKS)
    epochs = [torch.tensor([4.0, 2.0, 1.0]), torch.tensor([2.0, 2.0, 1.5])]
    for losses in epochs:
        assert torch.equal(dwa.weights(), torch.ones(3))
        dwa.on_epoch_end(losses)
    ratio = epochs[1] / epochs[0]
    expected = 3 * torch.softmax(ratio / 2.0, dim=0)
    assert torch.allclose(dwa.weights(), expected)
    assert float(dwa.weights().sum()) == pytest.approx(3.0)
    # The task whose loss fell least (c, which rose) gets the largest weight.
    assert int(dwa.weights().argmax()) == 2
