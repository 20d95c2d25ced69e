"""A training run's time and memory budget: the run stops, saying which budget it exceeded and where."""

from __future__ import annotations

import pytest

from tuner import budget
from tuner.budget import Budget, BudgetExceeded, resident_mb
from tuner.config import TrainConfig
from tuner.problems import Problem
from tuner.train import EpochReport, train


class Clock:
    """A monotonic clock that advances one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_a_run_over_its_time_budget_stops_at_a_batch_boundary(tiny: Problem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "time", Clock())  # started at 1 s; read again after loading (2 s), each batch
    seen: list[EpochReport] = []
    with pytest.raises(
        BudgetExceeded, match=r"time budget of 2.5 s \(MTL_TUNE_MAX_TRIAL_SECONDS\): 3 s at epoch 1, batch 2"
    ):
        train(tiny, TrainConfig(epochs=3), device="cpu", on_epoch_end=seen.append, budget=Budget(seconds=2.5))
    assert not seen


def test_a_run_over_its_memory_budget_stops(tiny: Problem) -> None:
    assert resident_mb() > 1
    with pytest.raises(BudgetExceeded, match=r"memory budget of 1 MiB \(MTL_TUNE_MAX_TRIAL_MEMORY_MB\)"):
        train(tiny, TrainConfig(epochs=2), device="cpu", budget=Budget(memory_mb=1))


def test_runs_within_their_budget_train_every_epoch(tiny: Problem) -> None:
    result = train(tiny, TrainConfig(epochs=2), device="cpu", budget=Budget(seconds=3600, memory_mb=10**6))
    assert len(result.history) == 2
