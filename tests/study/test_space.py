from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tuner.problems import create_problem
from tuner.study import Range, SpaceError, default_space, load_space, parse_space, resolve_space, suggest_config
from tuner.weighting import STRATEGIES


@pytest.mark.parametrize(
    ("data", "field", "problem_text"),
    [
        ({"lr_sharedd": {"low": 1e-4, "high": 1e-2}}, "lr_sharedd", "Extra inputs"),
        ({"lr_shared": {"low": 1e-2, "high": 1e-4}}, "lr_shared", "low (0.01) > high (0.0001)"),
        ({"lr_heads": {"low": 0.0, "high": 1e-2}}, "lr_heads", "log range must be positive"),
        ({"strategy": ["equal", "magic"]}, "strategy", "unknown strategy 'magic'"),
        ({"chain": "sideways"}, "chain", "unknown chain mode"),
        ({"batch_size": [0, 32]}, "batch_size", "batch size must be >= 1"),
        ({"strategies": {"magic": {"x": 1}}}, "strategies", "unknown strategy 'magic'"),
        ({"strategies": {"gradnorm": {"beta": 1}}}, "strategies", "gradnorm.beta: 'gradnorm' has no such knob"),
        ({"lr_shared": {"low": -0.1, "high": 0.1, "log": False}}, "lr_shared", "must be >= 0, got -0.1"),
        ({"lr_weighting": -1e-3}, "lr_weighting", "must be >= 0, got -0.001"),
        ({"lr_head": {"t0": {"low": -1, "high": 1, "log": False}}}, "lr_head.t0", "must be >= 0, got -1"),
        ({"weight_decay": -0.1}, "weight_decay", "must be >= 0"),
        ({"warmup": {"low": 0.0, "high": 1.0, "log": False}}, "warmup", "must be below 1, got 1"),
        ({"weights": {"low": 0.0, "high": 1.0, "log": False}}, "weights", "must be > 0, got 0"),
        ({"clip_grad": 0.0}, "clip_grad", "must be > 0, got 0"),
    ],
)
def test_invalid_space_names_the_field(data: dict, field: str, problem_text: str) -> None:
    with pytest.raises(SpaceError) as err:
        parse_space(data)
    message = str(err.value)
    assert f"space: {field}" in message
    assert problem_text in message


def test_space_file_yaml_and_json(tmp_path: Path) -> None:
    yml = tmp_path / "space.yaml"
    yml.write_text("strategy: [equal, gradnorm]\nalpha: {low: 0.5, high: 2.0, log: false}\nlr_shared: 0.001\n")
    space = load_space(yml)
    assert space.strategy_names == ["equal", "gradnorm"]
    assert space.strategies == {"gradnorm": {"alpha": Range(low=0.5, high=2.0, log=False)}}  # alpha is GradNorm's
    assert space.lr_shared == 0.001
    js = tmp_path / "space.json"
    js.write_text(json.dumps({"strategy": "uncertainty", "weights": {"low": 0, "high": 1}}))
    with pytest.raises(SpaceError, match="space: weights"):
        load_space(js)
    with pytest.raises(SpaceError, match="not valid YAML"):
        (tmp_path / "bad.yaml").write_text("strategy: [equal\n")
        load_space(tmp_path / "bad.yaml")


def test_default_space_follows_the_problem() -> None:
    digits = create_problem("multi-digits")
    space = default_space(digits)
    d = digits.defaults
    assert isinstance(space.lr_shared, Range)
    assert space.lr_shared.low == pytest.approx(d.lr_shared / 10)
    assert space.lr_shared.high == pytest.approx(d.lr_shared * 10)
    assert space.chain == ["none", "detach", "through"]
    assert default_space(create_problem("uncertainty-toy")).chain is None


def test_resolve_space_checks_task_names() -> None:
    toy = create_problem("gradnorm-toy", {"tasks": 2})
    with pytest.raises(SpaceError, match=r"weights\.t7: unknown task"):
        resolve_space(toy, {"weights": {"t7": {"low": 0.1, "high": 2}}})
    with pytest.raises(SpaceError, match="has no task chain"):
        resolve_space(toy, {"chain": ["detach"]})
    merged = resolve_space(toy, {"strategy": "gradnorm"})
    assert merged.strategy == "gradnorm"
    assert merged.lr_shared == default_space(toy).lr_shared


def test_strategy_knobs_take_their_default_ranges_under_what_the_user_names() -> None:
    """Every strategy in the default space, equal first; each one's own knobs over their declared ranges, a knob the
    user names replaced, the others kept; a top-level alpha is GradNorm's."""
    problem = create_problem("uncertainty-toy", {"n_train": 50, "n_val": 10})
    base = default_space(problem)
    assert base.strategy_names[0] == "equal" and set(base.strategy_names) == set(STRATEGIES)
    for name, cls in STRATEGIES.items():
        for knob, declared in cls.knobs.items():
            if declared.choices is not None:
                expected: object = list(declared.choices)
            elif declared.low is not None and declared.high is not None:
                expected = Range(low=declared.low, high=declared.high, log=declared.log)
            else:
                expected = declared.default
            assert base.strategies[name][knob] == expected
    resolved = resolve_space(problem, {"alpha": 0.7, "strategies": {"dwa": {"temperature": [1.0, 4.0]}}})
    assert resolved.strategies["gradnorm"] == {"alpha": 0.7}
    assert resolved.strategies["dwa"] == {"temperature": [1.0, 4.0]}
    stored = resolve_space(problem, resolved.model_dump(mode="json"))  # what a worker reads back
    assert stored.strategies == resolved.strategies


def test_a_trial_gets_its_strategys_knobs_as_conditional_parameters() -> None:
    problem = create_problem("uncertainty-toy", {"n_train": 50, "n_val": 10})
    space = resolve_space(problem, {"strategy": ["gradnorm", "dwa"], "strategies": {"dwa": {"temperature": 3.0}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = {}
    for _ in range(12):
        trial = study.ask()
        config = suggest_config(trial, space, problem, epochs=1, seed=0)
        seen[config.strategy] = config.strategy_options
        if config.strategy == "gradnorm":
            assert set(trial.params) >= {"gradnorm.alpha"} and 0.0 <= config.strategy_options["alpha"] <= 3.0
        else:  # a fixed knob is passed on without being a parameter
            assert "gradnorm.alpha" not in trial.params and "dwa.temperature" not in trial.params
            assert config.strategy_options == {"temperature": 3.0}
        study.tell(trial, 1.0)
    assert set(seen) == {"gradnorm", "dwa"}
