"""``serve --demo``: a first start launches the demo study; a database that has a study is left as it is. The demo's
budget leaves the default configuration (its baseline) beaten by learning rates inside its search space."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage
from mtl_tune_cli._demo import (
    DEMO_EPOCHS,
    DEMO_PROBLEM,
    DEMO_STRATEGIES,
    DEMO_STUDY,
    DEMO_TRIALS,
    launch_demo,
)
from tuner.config import TrainConfig
from tuner.problems import create_problem
from tuner.study import Range, resolve_space
from tuner.train import train
from tuner.weighting import STRATEGIES


def test_the_demo_is_launched_once_with_registered_strategies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    storage.ensure_schema(url)
    launch_demo(url)
    with storage.session_scope(url) as session:
        jobs = storage.list_jobs(session)
        assert [j.study_name for j in jobs] == [DEMO_STUDY]
        job = jobs[0]
        assert job.space is not None and job.space["strategy"] == DEMO_STRATEGIES
        assert (job.problem, job.epochs, job.n_trials, job.pruner) == (DEMO_PROBLEM, DEMO_EPOCHS, DEMO_TRIALS, "median")
        assert job.space["lr_shared"]["log"] and job.space["lr_heads"]["log"]  # drawn on log axes
    assert set(DEMO_STRATEGIES) <= set(STRATEGIES)
    launch_demo(url)  # a second start: nothing new
    with storage.session_scope(url) as session:
        assert len(storage.list_jobs(session)) == 1


@pytest.mark.slow
def test_in_the_demos_budget_tuning_beats_the_baseline_on_held_out_data() -> None:
    problem = create_problem(DEMO_PROBLEM)
    space = resolve_space(problem, {"strategy": DEMO_STRATEGIES})
    lr = 4 * problem.defaults.lr_shared
    for knob in (space.lr_shared, space.lr_heads):
        assert isinstance(knob, Range) and knob.low <= lr <= knob.high
    baseline = train(problem, TrainConfig(strategy="equal", epochs=DEMO_EPOCHS, seed=0), device="cpu")
    tuned = train(problem, TrainConfig(strategy="equal", epochs=DEMO_EPOCHS, seed=0, lr_shared=lr, lr_heads=lr),
                  device="cpu")  # fmt: skip
    assert tuned.objective < 0.8 * baseline.objective
    assert tuned.test is not None and baseline.test is not None
    for task in ("left", "right"):  # accuracy on the test split: digits the training images never drew on
        assert tuned.test[task]["metric"] > baseline.test[task]["metric"] + 0.03
