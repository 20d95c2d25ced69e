"""The verdict's statistics: differences paired by seed, Student's t interval, the judgement's direction, the
sentence, and tuned scalarization's front."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from scipy import stats

from storage.models import ConfirmationRun, StudyJob
from tuner.verdict import build_verdict, dominates, judge, non_dominated, paired_interval, sentence

TASKS = [
    {"name": "left", "kind": "classification", "metric": "accuracy", "direction": "maximize"},
    {"name": "right", "kind": "regression", "metric": "mse", "direction": "minimize"},
]


def _job(**fields: Any) -> StudyJob:
    values = {"study_name": "s", "objective": "scalar", "seed": 0, "confirm_seeds": 3, "confirm_pending": False}
    return StudyJob(**{**values, **fields, "created_at": datetime(2026, 1, 1, tzinfo=UTC)})


def _run(
    trial: int, seed: int, roles: list[str], strategy: str, left: float, right: float, **kw: Any
) -> ConfirmationRun:
    results = {"left": {"loss": 0.0, "metric": left}, "right": {"loss": 0.0, "metric": right}}
    values = {"state": "complete", "split": "test", "results": results, "fail_reason": None}
    return ConfirmationRun(
        trial_number=trial, seed=seed, roles=roles, current=True, config={"strategy": strategy}, **{**values, **kw}
    )


def test_the_interval_is_students_t_on_paired_differences() -> None:
    before, after = [0.50, 0.61, 0.70, 0.52], [0.55, 0.64, 0.78, 0.55]
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    interval = paired_interval(before, after)
    half = stats.t.ppf(0.975, 3) * stats.tstd(diffs) / math.sqrt(4)
    assert interval["mean"] == pytest.approx(sum(diffs) / 4)
    assert (interval["low"], interval["high"]) == pytest.approx((interval["mean"] - half, interval["mean"] + half))
    assert paired_interval([1.0], [2.0]) == {"mean": 1.0, "low": None, "high": None, "n": 1}


def test_a_judgement_follows_the_metrics_direction() -> None:
    up = {"low": 0.1, "high": 0.3}
    down = {"low": -0.3, "high": -0.1}
    across = {"low": -0.1, "high": 0.1}
    assert (judge(up, "maximize"), judge(up, "minimize")) == ("better", "worse")
    assert (judge(down, "maximize"), judge(down, "minimize")) == ("worse", "better")
    assert judge(across, "maximize") == judge(across, "minimize") == "within noise"
    assert judge({"low": None, "high": None, "n": 1}, "maximize") == "too few seeds"
    assert judge({"low": None, "high": None, "n": 0}, "maximize") == "not run yet"


def test_the_sentence_speaks_of_one_difference_or_several() -> None:
    assert sentence({"a": "within noise"}) == "on a the difference is within noise"
    assert sentence({"a": "within noise", "b": "within noise"}) == "on a and b the differences are within noise"


def test_the_sentence_names_each_kind_of_task() -> None:
    text = sentence({"left": "better", "sum": "better", "right": "within noise", "cost": "worse"})
    assert text == (
        "tuning beats the default on left and sum; the default beats tuning on cost; on right the difference is "
        "within noise"
    )


def test_seeds_are_paired_whatever_order_the_runs_come_in() -> None:
    # Seeds differ a lot from each other; the tuned configuration is better by the same margin on each seed.
    base = {1000: (0.20, 9.0), 1001: (0.50, 5.0), 1002: (0.80, 1.0)}
    runs = [_run(0, s, ["baseline"], "equal", left, right) for s, (left, right) in base.items()]
    runs += [_run(4, s, ["best"], "dwa", base[s][0] + 0.05, base[s][1] - 0.5) for s in (1002, 1000, 1001)]
    verdict = build_verdict(_job(), runs, TASKS)
    best = next(c for c in verdict["candidates"] if c["trial"] == 4)
    assert best["tasks"]["left"]["diff"] == pytest.approx({"mean": 0.05, "low": 0.05, "high": 0.05, "n": 3})
    assert verdict["judgements"] == {"left": "better", "right": "better"}
    assert verdict["sentence"] == "tuning beats the default on left and right"
    # The same numbers unpaired would be noise: the seeds' spread swamps the margin.
    unpaired = stats.ttest_ind([b[0] + 0.05 for b in base.values()], [b[0] for b in base.values()])
    assert unpaired.pvalue > 0.05


def test_a_seed_the_baseline_lacks_is_left_out_of_the_differences() -> None:
    runs = [
        _run(0, 1000, ["baseline"], "equal", 0.5, 1.0),
        _run(0, 1001, ["baseline"], "equal", 0.6, 1.0, state="failed", results=None, fail_reason="boom"),
        _run(0, 1002, ["baseline"], "equal", 0.7, 1.0),
        _run(2, 1000, ["best"], "dwa", 0.6, 0.9),
        _run(2, 1001, ["best"], "dwa", 0.1, 0.9),
        _run(2, 1002, ["best"], "dwa", 0.8, 0.9),
    ]
    verdict = build_verdict(_job(), runs, TASKS)
    best = next(c for c in verdict["candidates"] if c["trial"] == 2)
    assert best["tasks"]["left"]["diff"]["n"] == 2 and best["tasks"]["left"]["n"] == 3
    assert best["tasks"]["left"]["diff"]["mean"] == pytest.approx(0.1)
    baseline = next(c for c in verdict["candidates"] if c["trial"] == 0)
    assert baseline["failed"] == [{"seed": 1001, "reason": "boom"}]
    assert verdict["runs"] == {"queued": 0, "running": 0, "complete": 5, "failed": 1}


def test_a_problem_without_a_test_split_gets_an_optimistic_verdict() -> None:
    runs = [_run(0, 1000, ["baseline", "best"], "equal", 0.5, 1.0, split="validation")]
    verdict = build_verdict(_job(), runs, TASKS)
    assert (verdict["split"], verdict["optimistic"]) == ("validation", True)
    assert "default itself" in verdict["sentence"]


def test_dominance_follows_each_direction() -> None:
    dirs = ["maximize", "minimize"]
    assert dominates([0.9, 1.0], [0.8, 1.0], dirs) and not dominates([0.8, 1.0], [0.9, 1.0], dirs)
    assert not dominates([0.9, 1.0], [0.9, 1.0], dirs)  # equal points do not dominate each other
    assert not dominates([0.9, 2.0], [0.8, 1.0], dirs)
    assert non_dominated([[0.9, 2.0], [0.8, 1.0], [0.7, 1.5]], dirs) == [True, True, False]


def test_strategies_dominated_by_tuned_static_weightings_are_named() -> None:
    runs = []
    points = {  # trial: (roles, strategy, left ↑, right ↓)
        0: (["baseline"], "equal", 0.70, 2.0),
        1: (["best", "best static", "static front"], "static", 0.80, 1.0),
        2: (["static front"], "static", 0.90, 1.8),
        3: (["best dwa"], "dwa", 0.75, 1.5),  # dominated by trial 1
        4: (["best gradnorm"], "gradnorm", 0.95, 3.0),  # better on left than every static weighting
    }
    for trial, (roles, strategy, left, right) in points.items():
        runs += [_run(trial, s, roles, strategy, left + d, right + d) for s, d in ((1000, 0.0), (1001, 0.01))]
    scal = build_verdict(_job(), runs, TASKS)["scalarization"]
    assert scal is not None
    assert scal["static_trials"] == [1, 2]
    assert (scal["dominated"], scal["not_dominated"]) == (["default", "dwa"], ["gradnorm"])
    (pair,) = scal["pairs"]
    assert pair["tasks"] == ["left", "right"]
    assert [p["front"] for p in pair["static"]] == [True, True]
    assert {p["strategy"]: p["dominated"] for p in pair["others"]} == {"equal": True, "dwa": True, "gradnorm": False}
