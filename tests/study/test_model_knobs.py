"""A problem's own model knobs in the search space: suggested with the problem's ranges, overridable, checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import optuna
import pytest

from tests.tuner.conftest import TinyMixed
from tuner.problems import Knob
from tuner.study import SpaceError, resolve_space, suggest_config


class Knobbed(TinyMixed):
    model_knobs: ClassVar[Mapping[str, Knob]] = {
        "hidden": Knob(16, low=4, high=32, log=True),
        "depth": Knob(2, choices=(1, 2, 3)),
        "dropout": Knob(0.0),
    }


def _configs(space: dict[str, Any] | None, n: int = 12) -> list[dict[str, Any]]:
    problem = Knobbed.create()
    resolved = resolve_space(problem, space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest_config(trial, resolved, problem, epochs=1, seed=0).model)
        study.tell(trial, 1.0)
    return out


def test_declared_ranges_are_searched_and_fixed_knobs_keep_their_default() -> None:
    configs = _configs(None)
    assert all(isinstance(c["hidden"], int) and 4 <= c["hidden"] <= 32 for c in configs)
    assert len({c["hidden"] for c in configs}) > 3
    assert {c["depth"] for c in configs} <= {1, 2, 3} and len({c["depth"] for c in configs}) > 1
    assert all(c["dropout"] == 0.0 for c in configs)


def test_a_space_overrides_some_knobs_and_keeps_the_others() -> None:
    configs = _configs({"model": {"dropout": {"low": 0.0, "high": 0.5, "log": False}, "depth": 3}})
    assert all(c["depth"] == 3 for c in configs)
    assert all(0.0 <= c["dropout"] <= 0.5 for c in configs) and len({c["dropout"] for c in configs}) > 3
    assert all(4 <= c["hidden"] <= 32 for c in configs)  # still the problem's range


def test_an_unknown_model_knob_is_refused_with_its_name() -> None:
    with pytest.raises(SpaceError, match=r"model\.width: unknown model knob of problem 'tiny-mixed'"):
        resolve_space(Knobbed.create(), {"model": {"width": 8}})


def test_training_knobs_are_searchable_like_the_others() -> None:
    problem = Knobbed.create()
    space = {"schedule": ["constant", "cosine"], "warmup": {"low": 0.0, "high": 0.2, "log": False}, "clip_grad": 1.0}
    resolved = resolve_space(problem, space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        config = suggest_config(trial, resolved, problem, epochs=1, seed=0)
        seen.add(config.schedule)
        assert 0.0 <= config.warmup <= 0.2 and config.clip_grad == 1.0
        study.tell(trial, 1.0)
    assert seen == {"constant", "cosine"}
