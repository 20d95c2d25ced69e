"""The CLI's best-vs-baseline comparison judges each task by the direction its problem declared."""

from __future__ import annotations

import optuna

from storage.reports import compare, task_metrics


def _trial(metrics: dict[str, float]) -> optuna.trial.FrozenTrial:
    tasks = {name: {"metric": value} for name, value in metrics.items()}
    return optuna.trial.create_trial(value=1.0, user_attrs={"tasks": tasks})


def test_better_follows_each_tasks_declared_direction() -> None:
    study = optuna.create_study()
    study.set_user_attr(
        "tasks",
        [
            {"name": "click", "kind": "binary", "metric": "auc", "direction": "maximize"},
            {"name": "loss", "kind": "custom", "metric": "accuracy", "direction": "minimize"},
        ],
    )
    metrics = task_metrics(study)
    assert metrics == {"click": ("auc", "maximize"), "loss": ("accuracy", "minimize")}
    out = compare(_trial({"click": 0.70, "loss": 0.5}), _trial({"click": 0.65, "loss": 0.4}), metrics)
    assert out["click"]["better"] is False and out["click"]["change"] < 0
    assert out["loss"]["better"] is True  # a minimised metric called "accuracy": the name decides nothing
    assert compare(_trial({"click": 0.7}), _trial({"click": 0.7}), metrics)["click"]["better"] is None


def test_studies_recorded_before_directions_keep_their_meaning() -> None:
    study = optuna.create_study()
    study.set_user_attr("metric_names", {"left": "accuracy", "sum": "rmse"})
    assert task_metrics(study) == {"left": ("accuracy", "maximize"), "sum": ("rmse", "minimize")}
