"""Uncertainty weighting (Kendall et al. 2018) and its positive variant (Liebel & Körner 2018)."""

from __future__ import annotations

import math

import pytest
import torch

from tuner.config import TrainConfig
from tuner.problems import Task, create_problem
from tuner.train import train
from tuner.weighting import Uncertainty, UncertaintyPositive

TASKS = [Task("r", "regression"), Task("c", "classification", out_dim=4)]


def test_regression_and_classification_terms_follow_the_paper() -> None:
    strategy = Uncertainty(TASKS)
    s = torch.tensor([0.3, -0.7])
    with torch.no_grad():
        strategy.log_var.copy_(s)
    losses = torch.tensor([2.0, 0.5])
    expected = 0.5 * math.exp(-0.3) * 2.0 + 0.5 * 0.3 + math.exp(0.7) * 0.5 + 0.5 * -0.7
    assert float(strategy.combine(losses).detach()) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(strategy.report()["sigma"], torch.exp(0.5 * s))
    assert torch.allclose(strategy.weights(), torch.tensor([0.5 * math.exp(-0.3), math.exp(0.7)]))


def test_the_positive_regulariser_never_goes_negative() -> None:
    strategy = UncertaintyPositive(TASKS)
    c = torch.tensor([0.2, 3.0])
    with torch.no_grad():
        strategy.c.copy_(c)
    losses = torch.tensor([2.0, 0.5])
    expected = sum(loss / (2 * ci**2) + math.log1p(ci**2) for loss, ci in zip([2.0, 0.5], [0.2, 3.0], strict=True))
    assert float(strategy.combine(losses).detach()) == pytest.approx(expected, rel=1e-6)
    # With zero losses only the regulariser remains: ln(1 + c^2) >= 0, unlike Kendall's s / 2.
    assert float(strategy.combine(torch.zeros(2)).detach()) >= 0


def test_uncertainty_learns_the_noise_ratio_of_the_toy() -> None:
    """y1 has noise 10, y2 noise 1: the default training lands sigma1 / sigma2 within 15 % of 10."""
    problem = create_problem("uncertainty-toy", {"n_train": 2000})
    result = train(problem, TrainConfig(strategy="uncertainty"), device="cpu")
    sigma = {name: task.sigma for name, task in result.final.tasks.items()}
    assert sigma["y1"] is not None and sigma["y2"] is not None
    assert sigma["y1"] / sigma["y2"] == pytest.approx(10.0, rel=0.15)
