"""Confirmation: which configurations of a study are trained again over fresh seeds, and one such run.

Studies select on the validation split; a confirmation judges the selection on the test split, which chose nothing.
The configurations confirmed (each with the same seeds, so the runs are paired by seed):

- the baseline (equal weighting, the problem's default learning rates);
- scalar and compare studies: the ``top`` best trials (by the validation objective), the best trial of each strategy
  tried and, when ``static`` was tried, the tuned static weightings that no other static trial dominates on the
  validation metrics (up to ``STATIC_FRONT`` of them, best objective first): the front every other method is judged
  against;
- pareto studies: the Pareto set.

Every run trains the trial's configuration with its own seed (``storage.confirmation_seeds``: never a trial's seed)
on the same data: the test split stays the one no trial has seen.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import storage
from storage.confirmations import Candidate
from tuner.config import TrainConfig
from tuner.problems import Problem
from tuner.study._suggest import baseline_config
from tuner.train import train
from tuner.verdict import non_dominated

#: At most this many tuned static weightings are confirmed (with ``top`` when larger).
STATIC_FRONT = 4


def candidates(
    study: optuna.Study, problem: Problem, *, objective: str, top: int, epochs: int, seed: int
) -> list[Candidate]:
    """The configurations a confirmation trains again, each with why it is chosen; the baseline first."""
    trials = study.get_trials(deepcopy=False)
    chosen: dict[int, tuple[list[str], dict[str, Any]]] = {}

    def add(trial: FrozenTrial, role: str, config: dict[str, Any] | None = None) -> None:
        roles, _ = chosen.setdefault(trial.number, ([], config or trial.user_attrs.get("config", {})))
        roles.append(role)

    baseline = next((t for t in trials if t.user_attrs.get(storage.BASELINE_ATTR)), None)
    if baseline is not None:
        # A baseline that has not run yet is the configuration it would run.
        default = baseline_config(problem, epochs=epochs, seed=seed).model_dump(mode="json")
        add(baseline, "baseline", baseline.user_attrs.get("config") or default)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "config" in t.user_attrs]
    if objective == "pareto":
        for trial in study.best_trials:
            add(trial, "pareto")
        return _as_candidates(chosen)
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    ranked = sorted(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))
    for rank, trial in enumerate(ranked[:top]):
        add(trial, "best" if rank == 0 else f"top {rank + 1}")
    seen: set[str] = set()
    for trial in ranked:
        strategy = str(trial.user_attrs["config"].get("strategy"))
        if strategy not in seen:
            seen.add(strategy)
            add(trial, f"best {strategy}")
    static = [t for t in ranked if t.user_attrs["config"].get("strategy") == "static"]
    directions: dict[str, str] = {t.name: t.metric_def.direction for t in problem.tasks}
    vectors = [_metrics(t, directions) for t in static]
    front = [t for t, keep in zip(static, non_dominated(vectors, list(directions.values())), strict=True) if keep]
    for trial in front[: max(STATIC_FRONT, top)]:
        add(trial, "static front")
    return _as_candidates(chosen)


def _metrics(trial: FrozenTrial, directions: dict[str, str]) -> list[float | None]:
    """The trial's validation metric per task (None where it has none: the worst, for dominance)."""
    tasks = trial.user_attrs.get("tasks", {})
    return [tasks.get(name, {}).get("metric") for name in directions]


def _as_candidates(chosen: dict[int, tuple[list[str], dict[str, Any]]]) -> list[Candidate]:
    return [Candidate(number, roles, config) for number, (roles, config) in chosen.items()]


def run_confirmation(problem: Problem, config: dict[str, Any], *, device: str | None) -> tuple[str, dict[str, Any]]:
    """Train the configuration (its seed is the run's) and return the split it is judged on with every task's loss
    and metric there: the test split, or validation (an optimistic judgement) for a problem without one."""
    result = train(problem, TrainConfig.model_validate(config), device=device)
    if result.test is not None:
        return "test", result.test
    return "validation", {n: {"loss": t.val_loss, "metric": t.metric} for n, t in result.final.tasks.items()}
