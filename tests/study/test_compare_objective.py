"""``objective compare``: the budget is shared evenly between the space's strategies, each tuning its own knobs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest

import storage
from tests.study.helpers import TINY, run_study
from tuner.study import SpaceError, StudySpec, create_study

STRATEGIES = ["equal", "static", "dwa"]


def test_every_strategy_gets_an_even_share_of_the_trials(sqlite_url: str) -> None:
    space = {"strategy": STRATEGIES, "lr_shared": {"low": 1e-3, "high": 1e-1, "log": True}}
    name = run_study(sqlite_url, n_trials=10, objective="compare", sampler="tpe", pruner="none", space=space)
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(sqlite_url))
    searched = [t for t in study.trials if not t.user_attrs.get(storage.BASELINE_ATTR)]
    shares = Counter(t.params["strategy"] for t in searched)
    assert sorted(shares.values()) == [3, 3, 3]  # nine trials besides the baseline, three each
    assert len({t.params["lr_shared"] for t in searched}) == len(searched)  # the rest is still tuned
    with storage.session_scope(sqlite_url) as session:
        assert storage.study_progress(session, name).best_value is not None


def test_a_scalar_study_keeps_its_samplers_preferences(sqlite_url: str) -> None:
    # The same request as a scalar study, sampled at random with this seed, does not come out even: compare's
    # balance is its own doing.
    name = run_study(sqlite_url, n_trials=10, objective="scalar", sampler="random", pruner="none",
                     space={"strategy": STRATEGIES}, seed=1)  # fmt: skip
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(sqlite_url))
    shares = Counter(t.params["strategy"] for t in study.trials if "strategy" in t.params)
    assert sorted(shares.values()) != [3, 3, 3]


def test_compare_studies_are_not_pruned_unless_asked() -> None:
    base = {"problem": "uncertainty-toy", "objective": "compare"}
    assert StudySpec.model_validate(base).effective_pruner == "none"
    assert StudySpec.model_validate({**base, "pruner": "median"}).effective_pruner == "median"
    assert StudySpec.model_validate({**base, "objective": "scalar"}).effective_pruner == "hyperband"


def test_compare_needs_two_strategies(tmp_path: Path) -> None:
    spec = StudySpec.model_validate(
        {"problem": "uncertainty-toy", "problem_options": TINY, "objective": "compare", "space": {"strategy": "dwa"}}
    )
    with pytest.raises(SpaceError, match="at least two"):
        create_study(f"sqlite:///{tmp_path / 'c.db'}", spec, source="cli")
