"""Samplers and pruners by name, always seeded and with their arguments spelled out (defaults move between
Optuna releases)."""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import optuna
from optuna.trial import TrialState

Objective = Literal["scalar", "pareto", "compare"]
SamplerName = Literal["tpe", "random", "cmaes", "gp", "nsga2", "qmc"]
PrunerName = Literal["hyperband", "median", "successive-halving", "dominated", "none"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PRUNERS: tuple[str, ...] = get_args(PrunerName)
#: Pruners for pareto studies: Optuna prunes none, so mtl-tune's ``dominated`` rule (``_dominance.py``) is the one.
PARETO_PRUNERS: tuple[str, ...] = ("dominated", "none")


def make_sampler(name: str, *, seed: int, objective: str) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # group=True: the space is conditional (alpha only for gradnorm, task weights only for static, ...), and
        # grouped multivariate TPE models each strategy's parameters jointly instead of falling back to sampling
        # them independently. On gradnorm-toy it halves the epochs needed to match random search.
        with warnings.catch_warnings():  # ``group`` is marked experimental; the warning is noise for users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=10, n_ei_candidates=24, multivariate=True, group=True, constant_liar=True
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES samples continuous knobs; categorical ones (strategy, optimizer) fall back to random.
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=1,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=10,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "qmc":
        with warnings.catch_warnings():  # QMCSampler is marked experimental; the warning is noise for users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                warn_asynchronous_seeding=False,
                warn_independent_sampling=False,
            )
    raise ValueError(f"sampler: unknown {name!r}; expected one of {', '.join(SAMPLERS)}")


# Rungs of Hyperband and successive halving: MIN_RESOURCE * REDUCTION_FACTOR**k epochs.
MIN_RESOURCE = 1
REDUCTION_FACTOR = 3


def prune_steps(pruner: str, *, epochs: int, objective: str) -> frozenset[int] | None:
    """The epochs (1-based) after which the pruner is asked whether to stop; None means after every epoch.

    Every epoch's objective is reported to Optuna; asking the pruner costs database reads, so it is only asked
    where it can decide: successive halving and Hyperband decide at their rungs
    (min_resource * reduction_factor^k epochs), the median pruner after any epoch, and nothing prunes studies
    without a pruner. Pareto studies are pruned by mtl-tune's ``dominated`` rule only, at the same rungs as
    Hyperband except the last epoch (stopping a trial there would save nothing).
    """
    if pruner == "none" or (objective == "pareto" and pruner != "dominated"):
        return frozenset()
    if pruner == "dominated":
        return frozenset(step for step in _rungs(epochs) if step < epochs)
    if pruner in ("hyperband", "successive-halving"):
        return _rungs(epochs)
    return None


def _rungs(epochs: int) -> frozenset[int]:
    steps, rung = set(), MIN_RESOURCE
    while rung <= epochs:
        steps.add(rung)
        rung *= REDUCTION_FACTOR
    return frozenset(steps)


def make_pruner(name: str, *, epochs: int, objective: str) -> optuna.pruners.BasePruner:
    """Optuna cannot prune multi-objective studies, so pareto studies always get Optuna's NopPruner: the
    ``dominated`` rule is decided by the trial itself (``TrialRunner``), never through Optuna."""
    if objective == "pareto" or name in ("none", "dominated"):
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=MIN_RESOURCE, max_resource=epochs, reduction_factor=REDUCTION_FACTOR
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1, interval_steps=1)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=MIN_RESOURCE, reduction_factor=REDUCTION_FACTOR)
    raise ValueError(f"pruner: unknown {name!r}; expected one of {', '.join(PRUNERS)}")


def compare_sampler(
    study: optuna.Study, base: optuna.samplers.BaseSampler, strategies: list[str]
) -> optuna.samplers.BaseSampler:
    """For ``compare`` studies: the next trial takes the strategy with the fewest trials so far (running, complete or
    pruned; the baseline aside), first in the space's order on a tie, and ``base`` tunes the rest of its knobs.

    Every strategy then gets an even share of the budget instead of the share a sampler's preferences would give it,
    so the verdict compares methods each tuned with the same effort.
    """
    counted = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    used = dict.fromkeys(strategies, 0)
    for trial in study.get_trials(deepcopy=False, states=counted):
        strategy = trial.params.get("strategy")
        if strategy in used:
            used[strategy] += 1
    least = min(strategies, key=lambda s: (used[s], strategies.index(s)))
    with warnings.catch_warnings():  # PartialFixedSampler is marked experimental; the warning is noise for users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler({"strategy": least}, base)
