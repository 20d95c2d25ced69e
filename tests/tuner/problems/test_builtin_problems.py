"""The built-in problems: deterministic by seed, shaped as documented, learnable."""

from __future__ import annotations

import pytest
import torch

from tuner.config import TrainConfig
from tuner.problems import ProblemError, Task, available_problems, create_problem
from tuner.problems._digits import _SUM_MEAN, _SUM_STD
from tuner.problems._toys import TEN_TASK_SIGMAS, GradNormToy
from tuner.train import train


def test_the_registry_holds_the_built_ins() -> None:
    assert {"gradnorm-toy", "uncertainty-toy", "multi-digits", "csv"} <= set(available_problems())


def test_gradnorm_toy_tasks_and_scales() -> None:
    two = create_problem("gradnorm-toy", {"tasks": 2, "n_train": 300, "n_val": 50})
    assert two.task_names == ["t0", "t1"]
    y = two.load().train.y
    assert y["t0"].shape == (300, 100)
    # f_i = sigma_i tanh(...) with |tanh| <= 1: the scales are sigma = (1, 100).
    assert float(y["t0"].abs().max()) <= 1.0 < float(y["t1"].abs().max()) <= 100.0
    assert float(y["t1"].std() / y["t0"].std()) == pytest.approx(100, rel=0.2)
    ten = create_problem("gradnorm-toy", {"tasks": 10, "n_train": 20, "n_val": 10})
    assert ten.task_names == [f"t{i}" for i in range(10)]
    assert isinstance(ten, GradNormToy) and ten.sigmas == TEN_TASK_SIGMAS
    with pytest.raises(ProblemError, match="problem 'gradnorm-toy': tasks"):
        create_problem("gradnorm-toy", {"tasks": 11})


def test_uncertainty_toy_follows_the_notebook() -> None:
    problem = create_problem("uncertainty-toy", {"n_train": 4000, "n_val": 10})
    assert problem.task_names == ["y1", "y2"]
    split = problem.load().train
    x = split.x[:, 0]
    noise1, noise2 = split.y["y1"][:, 0] - (2 * x + 8), split.y["y2"][:, 0] - (3 * x + 3)
    assert float(noise1.std()) == pytest.approx(10, rel=0.05)
    assert float(noise2.std()) == pytest.approx(1, rel=0.05)


def test_multi_digits_is_deterministic_by_seed() -> None:
    options = {"n_train": 200, "n_val": 50}
    a = create_problem("multi-digits", options).load()
    b = create_problem("multi-digits", options).load()
    c = create_problem("multi-digits", {**options, "seed": 1}).load()
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y["left"], b.val.y["left"])
    assert not torch.equal(a.train.x, c.train.x)
    assert a.train.x.shape == (200, 1, 12, 12)
    left, right, total = a.train.y["left"], a.train.y["right"], a.train.y["sum"][:, 0]
    assert torch.allclose(total * _SUM_STD + _SUM_MEAN, (left + right).float(), atol=1e-5)


def test_multi_digits_learns_above_chance_in_a_few_epochs() -> None:
    problem = create_problem("multi-digits", {"n_val": 400})
    assert [t.kind for t in problem.tasks] == ["classification", "classification", "regression"]
    result = train(problem, TrainConfig(epochs=3), device="cpu")
    tasks = result.final.tasks
    assert tasks["left"].metric > 0.3 and tasks["right"].metric > 0.3  # chance: 0.1
    assert tasks["sum"].metric < 0.8 * _SUM_STD  # RMSE in digit units, below predicting the mean


def test_task_metrics() -> None:
    pred, target = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])
    assert float(Task("r", "regression", metric_scale=2.0).metric_value(pred, target)) == pytest.approx(2.0 * 5.0**0.5)
    mse = Task("r", "regression", metric="mse", metric_scale=2.0)
    assert float(mse.metric_value(pred, target)) == pytest.approx(4.0 * 5.0)
    assert mse.direction == "minimize"
    accuracy = Task("c", "classification", out_dim=2)
    assert accuracy.metric == "accuracy" and accuracy.direction == "maximize"
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    assert float(accuracy.metric_value(logits, torch.tensor([0, 1, 1]))) == pytest.approx(2 / 3)
    with pytest.raises(ProblemError, match="metric 'accuracy' does not suit a regression task"):
        Task("r", "regression", metric="accuracy")
