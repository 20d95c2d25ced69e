"""A trial over the operator's time or memory budget fails, and the reason says which budget."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.study.helpers import TINY
from tuner.study import StudySpec, Worker, WorkerSettings, create_study


def test_a_trial_over_the_operators_budget_fails_with_that_reason(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTL_TUNE_MAX_TRIAL_MEMORY_MB", "1")
    spec = StudySpec(problem="uncertainty-toy", problem_options=TINY, epochs=2, n_trials=1, name="greedy")
    create_study(sqlite_url, spec, source="cli")
    worker = WorkerSettings(url=sqlite_url, study_name="greedy", exit_when_idle=True, device="cpu", max_trials=1)
    Worker(worker).run()
    trials = optuna.load_study(study_name="greedy", storage=sqlite_url).get_trials()
    assert trials[0].state == TrialState.FAIL  # (and its parameters queued again, as for any failed trial)
    assert "MTL_TUNE_MAX_TRIAL_MEMORY_MB" in trials[0].user_attrs["fail_reason"]
