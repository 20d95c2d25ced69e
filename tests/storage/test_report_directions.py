"""The best-vs-baseline comparison (the CLI's and the API's) judges each task by the direction its problem declared."""

from __future__ import annotations

import optuna

from api.views import comparison
from storage.reports import task_metrics


def _tasks(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """A trial's ``tasks`` user attribute, as Optuna and the trial summaries keep it."""
    return {name: {"metric": value} for name, value in metrics.items()}


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
    out = comparison(_tasks({"click": 0.70, "loss": 0.5}), _tasks({"click": 0.65, "loss": 0.4}), metrics)
    assert out["click"]["better"] is False and out["click"]["change"] < 0
    assert out["loss"]["better"] is True  # a minimised metric called "accuracy": the name decides nothing
    assert comparison(_tasks({"click": 0.7}), _tasks({"click": 0.7}), metrics)["click"]["better"] is None
    unknown = comparison(_tasks({"other": 1.0}), _tasks({"other": 2.0}), metrics)["other"]
    assert (unknown["metric"], unknown["direction"], unknown["better"]) == ("metric", None, None)


def test_studies_recorded_before_directions_keep_their_meaning() -> None:
    study = optuna.create_study()
    study.set_user_attr("metric_names", {"left": "accuracy", "sum": "rmse"})
    assert task_metrics(study) == {"left": ("accuracy", "maximize"), "sum": ("rmse", "minimize")}
