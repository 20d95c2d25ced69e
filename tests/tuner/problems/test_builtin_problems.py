"""The built-in problems: deterministic by seed, shaped as documented, learnable."""

from __future__ import annotations

import pytest
import torch

from tuner.config import TrainConfig
from tuner.problems import ProblemError, available_problems, create_problem
from tuner.problems._digits import _SUM_MEAN, _SUM_STD
from tuner.problems._toys import TEN_TASK_SIGMAS, GradNormToy
from tuner.train import train


def test_the_registry_holds_the_built_ins() -> None:
    assert {"gradnorm-toy", "uncertainty-toy", "multi-digits", "csv"} <= set(available_problems())


def test_gradnorm_toy_tasks_and_scales() -> None:
    two = create_problem("gradnorm-toy", {"tasks": 2, "n_train": 300, "n_val": 50})
    assert two.task_names == ["t0", "t1"]
    y = two.load().train.targets
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
    x = split.inputs[:, 0]
    noise1, noise2 = split.targets["y1"][:, 0] - (2 * x + 8), split.targets["y2"][:, 0] - (3 * x + 3)
    assert float(noise1.std()) == pytest.approx(10, rel=0.05)
    assert float(noise2.std()) == pytest.approx(1, rel=0.05)


def test_multi_digits_is_deterministic_by_seed() -> None:
    options = {"n_train": 200, "n_val": 50}
    a = create_problem("multi-digits", options).load()
    b = create_problem("multi-digits", options).load()
    c = create_problem("multi-digits", {**options, "seed": 1}).load()
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.val.targets["left"], b.val.targets["left"])
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert a.train.inputs.shape == (200, 1, 12, 12)
    left, right, total = a.train.targets["left"], a.train.targets["right"], a.train.targets["sum"][:, 0]
    assert torch.allclose(total * _SUM_STD + _SUM_MEAN, (left + right).float(), atol=1e-5)


def test_multi_digits_learns_above_chance_in_a_few_epochs() -> None:
    problem = create_problem("multi-digits", {"n_val": 400})
    assert [t.kind for t in problem.tasks] == ["classification", "classification", "regression"]
    result = train(problem, TrainConfig(epochs=3), device="cpu")
    tasks = result.final.tasks
    assert tasks["left"].metric > 0.3 and tasks["right"].metric > 0.3  # chance: 0.1
    assert tasks["sum"].metric < 0.8 * _SUM_STD  # RMSE in digit units, below predicting the mean


@pytest.mark.parametrize("name", ["gradnorm-toy", "uncertainty-toy", "multi-digits"])
def test_built_ins_hold_out_a_test_split_and_keep_their_train_and_validation_data(name: str) -> None:
    problem = create_problem(name, {"n_train": 100, "n_val": 20, "n_test": 30})
    data = problem.load()
    assert data.test is not None and len(data.test) == 30
    smaller = create_problem(name, {"n_train": 100, "n_val": 20, "n_test": 10}).load()
    assert torch.equal(data.train.inputs, smaller.train.inputs)  # the test split draws from its own stream
    assert torch.equal(data.val.inputs, smaller.val.inputs)
    assert not any(
        bool((row == data.train.inputs).all(dim=tuple(range(1, row.dim() + 1))).any()) for row in data.test.inputs[:5]
    )
