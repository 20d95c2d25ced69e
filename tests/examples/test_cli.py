"""The example plugins through the CLI: ``train`` with three strategies each, and a three-trial study."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.examples.helpers import cli, row_of

#: Each example's tasks and the metric each reports.
METRICS = {
    "recsys-demo": {"click": "auc", "conversion": "auc", "dwell": "rmse"},
    "segdepth-demo": {"seg": "miou", "depth": "mae"},
}
#: Smaller data for the studies' trials.
SMALL = {"recsys-demo": ["n_train=500", "n_val=200"], "segdepth-demo": ["n_train=64", "n_val=32"]}
#: A model knob each example lets a study search.
SEARCHED_KNOB = {"recsys-demo": "dropout", "segdepth-demo": "width"}
#: The recommender's conversion tower reads p(click): detach it for some strategies, let it through for another.
CHAIN_MODE = {"equal": "detach", "uncertainty": "through", "gradnorm": "detach"}


def check_metric(metric: str, value: float) -> None:
    assert math.isfinite(value)
    assert 0.0 <= value <= 1.0 if metric in ("auc", "miou") else value >= 0.0


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("strategy", ["equal", "uncertainty", "gradnorm"])
@pytest.mark.parametrize("problem", sorted(METRICS))
def test_train_one_epoch_with_each_strategy(problem: str, strategy: str) -> None:
    args = ["train", "--problem", problem, "--strategy", strategy, "--epochs", "1", "--device", "cpu", "--json"]
    chain = None
    if problem == "recsys-demo":
        chain = {"source": "click", "target": "conversion", "mode": CHAIN_MODE[strategy]}
        args += ["--chain", f"click:conversion:{chain['mode']}"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["problem"] == problem
    assert out["config"]["strategy"] == strategy and out["config"]["epochs"] == 1
    assert out["config"]["chain"] == chain
    assert set(out["tasks"]) == set(METRICS[problem])
    for task, metric in METRICS[problem].items():
        check_metric(metric, out["tasks"][task]["metric"])
    weights = out["loss_weights"]
    if strategy == "equal":
        assert set(weights.values()) == {1.0}
    if strategy == "gradnorm":  # renormalised to sum to the number of tasks, and moved off 1 by the first steps
        assert sum(weights.values()) == pytest.approx(len(weights), abs=1e-4)
        assert set(weights.values()) != {1.0}
    assert ("sigma" in out) == (strategy == "uncertainty")


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("problem", sorted(METRICS))
def test_train_prints_each_task_with_its_metric(problem: str) -> None:
    result = cli("train", "--problem", problem, "--epochs", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for task, metric in METRICS[problem].items():
        assert row_of(result.stdout, task)[1].split()[0] == metric


@pytest.mark.parametrize("problem", sorted(METRICS))
def test_three_trial_study(installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    # The command runs here; its worker is a new interpreter that finds the example where pip installed it.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(installed), os.environ.get("PYTHONPATH")])))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["study", "run", "--problem", problem, "--trials", "3", "--epochs", "1", "--workers", "1"]
    small = [a for option in SMALL[problem] for a in ("--option", option)]
    run = cli(*args, *small, "--storage", url, "--study", "demo", "--sampler", "random")
    assert run.exit_code == 0, run.output
    for task, metric in METRICS[problem].items():
        _, shown, baseline, best, *_ = row_of(run.stdout, task)
        assert shown.split()[0] == metric  # the name, then the direction's arrow
        check_metric(metric, float(baseline))
        check_metric(metric, float(best))

    study = optuna.load_study(study_name="demo", storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    # The problem's own model knobs are searched next to the strategy and the learning rates.
    assert any(SEARCHED_KNOB[problem] in param for t in finished for param in t.params)
