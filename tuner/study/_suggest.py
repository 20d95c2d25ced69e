"""Turn an Optuna trial into a ``TrainConfig``: the only place that calls ``trial.suggest_*``."""

from __future__ import annotations

from typing import Any

import optuna

from storage import BASELINE_ATTR
from tuner.config import Chain, TrainConfig
from tuner.problems import Problem
from tuner.study._space import FloatKnob, ModelKnob, Range, SearchSpace, strategy_knobs
from tuner.weighting import STRATEGIES, build_strategy


def baseline_config(problem: Problem, *, epochs: int, seed: int) -> TrainConfig:
    """Equal weighting with the problem's default learning rates: the question every study answers first."""
    chain = Chain(source=problem.chains[0][0], target=problem.chains[0][1], mode="none") if problem.chains else None
    return TrainConfig(strategy="equal", epochs=epochs, seed=seed, chain=chain)


def learnable(problem: Problem, strategy: str) -> bool:
    """Whether a strategy has loss-weight parameters (so ``lr_weighting`` means something)."""
    return any(True for _ in build_strategy(problem.tasks, TrainConfig(strategy=strategy)).parameters())


def suggest_config(trial: optuna.Trial, space: SearchSpace, problem: Problem, *, epochs: int, seed: int) -> TrainConfig:
    """Sample a configuration; conditional knobs are only suggested where they apply."""
    if trial.user_attrs.get(BASELINE_ATTR):
        return baseline_config(problem, epochs=epochs, seed=seed)
    cfg: dict[str, Any] = {"epochs": epochs, "seed": seed}
    strategy = _categorical(trial, "strategy", space.strategy)
    cfg["strategy"] = strategy
    if strategy == "static":
        names = problem.task_names
        per_task = space.weights if isinstance(space.weights, dict) else dict.fromkeys(names, space.weights)
        cfg["weights"] = {t: _float(trial, f"weight_{t}", per_task.get(t, 1.0)) for t in names}
    own = STRATEGIES[strategy].knobs
    if own:  # the strategy's own knobs, ``<strategy>.<knob>``: conditional on the strategy
        knobs = strategy_knobs(strategy, space.strategies.get(strategy))
        cfg["strategy_options"] = {
            k: _model(trial, f"{strategy}.{k}", knob, own[k].default) for k, knob in knobs.items()
        }
    if learnable(problem, strategy) and space.lr_weighting is not None:
        cfg["lr_weighting"] = _float(trial, "lr_weighting", space.lr_weighting)
    if space.lr_shared is not None:
        cfg["lr_shared"] = _float(trial, "lr_shared", space.lr_shared)
    if space.lr_head:
        cfg["lr_head"] = {t: _float(trial, f"lr_head_{t}", knob) for t, knob in space.lr_head.items()}
    elif space.lr_heads is not None:
        cfg["lr_heads"] = _float(trial, "lr_heads", space.lr_heads)
    cfg["weight_decay"] = _float(trial, "weight_decay", space.weight_decay)
    if space.batch_size is not None:
        cfg["batch_size"] = _categorical(trial, "batch_size", space.batch_size)
    cfg["optimizer"] = _categorical(trial, "optimizer", space.optimizer)
    cfg["schedule"] = _categorical(trial, "schedule", space.schedule)
    cfg["warmup"] = _float(trial, "warmup", space.warmup)
    if space.clip_grad is not None:
        cfg["clip_grad"] = _float(trial, "clip_grad", space.clip_grad)
    cfg["precision"] = _categorical(trial, "precision", space.precision)
    if problem.chains and space.chain is not None:
        (source, target), mode = problem.chains[0], _categorical(trial, "chain", space.chain)
        cfg["chain"] = {"source": source, "target": target, "mode": mode}
    if space.model:
        defaults = problem.knob_values(None)
        cfg["model"] = {k: _model(trial, f"model_{k}", knob, defaults.get(k)) for k, knob in space.model.items()}
    return TrainConfig.model_validate(cfg)


def _model(trial: optuna.Trial, name: str, knob: ModelKnob, default: Any) -> Any:
    """A model's or a strategy's knob (parameter ``name``): integer ranges for integer knobs, float ranges
    otherwise, lists as choices."""
    if isinstance(knob, Range) and isinstance(default, int) and not isinstance(default, bool):
        low, high = int(knob.low), int(knob.high)
        return low if low == high else trial.suggest_int(name, low, high, log=knob.log)
    if isinstance(knob, Range):
        return _float(trial, name, knob)
    return _categorical(trial, name, knob)


def _float(trial: optuna.Trial, name: str, knob: FloatKnob) -> float:
    if isinstance(knob, Range):
        if knob.low == knob.high:
            return knob.low
        return trial.suggest_float(name, knob.low, knob.high, log=knob.log)
    return float(knob)


def _categorical(trial: optuna.Trial, name: str, knob: Any) -> Any:
    if isinstance(knob, list):
        return knob[0] if len(knob) == 1 else trial.suggest_categorical(name, knob)
    return knob


__all__ = ["BASELINE_ATTR", "STRATEGIES", "baseline_config", "learnable", "suggest_config"]
