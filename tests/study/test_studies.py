from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

import storage
from api.views import study_detail
from storage.reports import best_config
from tests.study.helpers import TINY, run_study
from tuner.study import BASELINE_ATTR, SAMPLERS, StudySpec, Worker, WorkerSettings, create_or_resume, create_study
from tuner.weighting import STRATEGIES

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(url: str, name: str) -> optuna.Study:
    # The storage is a plain Optuna storage: load_study is how any Optuna tool reads it.
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "nsga2"])
def test_each_sampler_runs_a_scalar_study(sqlite_url: str, sampler: str) -> None:
    name = run_study(sqlite_url, sampler=sampler, n_trials=4, pruner="none", name=f"s-{sampler}")
    trials = _study(sqlite_url, name).get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 4
    assert all(math.isfinite(t.value) for t in finished if t.state == TrialState.COMPLETE)
    # Every trial records its per-task final numbers and its configuration.
    for t in finished:
        assert set(t.user_attrs["tasks"]) == {"y1", "y2"}
        assert "val_loss" in t.user_attrs["tasks"]["y1"]
        assert t.user_attrs["config"]["epochs"] == 2


def test_baseline_is_trial_zero(sqlite_url: str) -> None:
    name = run_study(sqlite_url, n_trials=2, sampler="random", pruner="none")
    first = _study(sqlite_url, name).get_trials()[0]
    assert first.number == 0
    assert first.user_attrs[BASELINE_ATTR] is True
    assert first.user_attrs["config"]["strategy"] == "equal"
    assert first.user_attrs["config"]["lr_shared"] is None  # the problem's default learning rates


def test_conditional_parameters_exist_only_where_they_mean_something(sqlite_url: str) -> None:
    space = {"strategy": ["equal", "static", "uncertainty", "gradnorm", "dwa"]}
    name = run_study(sqlite_url, n_trials=16, sampler="random", pruner="none", epochs=1, space=space)
    trials = [t for t in _study(sqlite_url, name).get_trials() if not t.user_attrs.get(BASELINE_ATTR)]
    seen = set()
    for t in trials:
        strategy = t.params["strategy"]
        seen.add(strategy)
        # A strategy's own knobs (GradNorm's alpha, DWA's temperature) only for that strategy.
        own = {f"{name}.{knob}" for name, cls in STRATEGIES.items() for knob in cls.knobs if name == strategy}
        others = {f"{name}.{knob}" for name, cls in STRATEGIES.items() for knob in cls.knobs} - own
        assert own <= set(t.params) and not others & set(t.params), t.params
        assert ("weight_y1" in t.params) == (strategy == "static"), t.params
        assert ("lr_weighting" in t.params) == (strategy in ("uncertainty", "gradnorm")), t.params
        assert "chain" not in t.params  # uncertainty-toy has no chain
    assert {"gradnorm", "static", "dwa"} <= seen


def test_pareto_study_has_a_pareto_set_and_no_pruning(sqlite_url: str) -> None:
    name = run_study(sqlite_url, n_trials=5, sampler="nsga2", objective="pareto", pruner="median")
    study = _study(sqlite_url, name)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.best_trials
    assert all(len(t.values) == 2 for t in study.best_trials)
    with storage.session_scope(sqlite_url) as session:
        assert storage.get_job(session, name).pruner == "none"
    with storage.session_scope(sqlite_url) as session:
        shown = study_detail(session, storage.get_job(session, name))
    assert sorted(row.number for row in shown.best) == sorted(t.number for t in study.best_trials)


def test_bad_configurations_get_pruned(sqlite_url: str) -> None:
    spec = StudySpec(
        problem="uncertainty-toy",
        problem_options=TINY,
        epochs=6,
        n_trials=12,
        sampler="random",
        pruner="median",
        name="prune-me",
    )
    launched = create_study(sqlite_url, spec, source="cli")
    study = _study(sqlite_url, launched.study_name)
    settings = WorkerSettings(url=sqlite_url, study_name="prune-me", exit_when_idle=True, device="cpu")
    Worker(replace(settings, max_trials=6)).run()  # the median's reference trials
    for _ in range(4):  # learning rates so small that nothing is learnt
        study.enqueue_trial({"strategy": "equal", "lr_shared": 1e-7, "lr_heads": 1e-7}, user_attrs={"bad": True})
    Worker(settings).run()
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert [t.state for t in trials if t.user_attrs.get("bad")].count(TrialState.PRUNED) >= 3
    assert sum(s in FINISHED for s in states) == 12


def test_the_baseline_is_never_pruned(sqlite_url: str) -> None:
    """Every study compares its best trial with the baseline, so the baseline runs all its epochs."""
    spec = StudySpec(
        problem="uncertainty-toy",
        problem_options=TINY,
        epochs=4,
        n_trials=2,
        sampler="random",
        pruner="median",
        name="keep-baseline",
    )
    create_study(sqlite_url, spec, source="cli")  # trial 0, the baseline, waits in Optuna's queue
    study = _study(sqlite_url, "keep-baseline")
    for _ in range(5):  # finished trials better than any real one at every epoch: the median prunes from epoch 2
        study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values=dict.fromkeys(range(1, 5), 0.0)))
    Worker(WorkerSettings(url=sqlite_url, study_name="keep-baseline", exit_when_idle=True, device="cpu")).run()
    ran = [t for t in study.get_trials() if t.value != 0.0]
    assert [(t.user_attrs.get(BASELINE_ATTR, False), t.state) for t in ran] == [
        (True, TrialState.COMPLETE),
        (False, TrialState.PRUNED),
    ]
    assert len(ran[0].intermediate_values) == 4


def test_non_finite_loss_fails_the_trial_with_its_reason_and_the_study_goes_on(sqlite_url: str) -> None:
    spec = StudySpec(
        problem="uncertainty-toy",
        problem_options=TINY,
        epochs=2,
        n_trials=3,
        sampler="random",
        pruner="none",
        name="diverge",
        space={"optimizer": "sgd", "lr_shared": {"low": 1e3, "high": 1e4}, "strategy": "equal"},
    )
    launched = create_study(sqlite_url, spec, source="cli")
    Worker(
        WorkerSettings(url=sqlite_url, study_name=launched.study_name, exit_when_idle=True, device="cpu", max_trials=4)
    ).run()
    trials = _study(sqlite_url, "diverge").get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, [t.state for t in trials]
    assert "non-finite" in failed[0].user_attrs["fail_reason"]
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_resume_reaches_the_target(sqlite_url: str) -> None:
    spec = StudySpec(
        problem="uncertainty-toy", problem_options=TINY, epochs=1, n_trials=5, sampler="tpe", name="resume-me"
    )
    create_or_resume(sqlite_url, spec, source="cli")
    Worker(WorkerSettings(url=sqlite_url, study_name="resume-me", exit_when_idle=True, max_trials=2)).run()
    again = create_or_resume(sqlite_url, spec, source="cli")
    assert not again.created
    Worker(WorkerSettings(url=sqlite_url, study_name="resume-me", exit_when_idle=True)).run()
    finished = [t for t in _study(sqlite_url, "resume-me").get_trials() if t.state in FINISHED]
    assert len(finished) == 5
    with storage.session_scope(sqlite_url) as session:
        assert storage.get_job(session, "resume-me").status == "completed"


def test_best_configuration_reproduces_its_objective(sqlite_url: str, tmp_path) -> None:
    name = run_study(sqlite_url, n_trials=3, sampler="random", pruner="none", epochs=3)
    doc = best_config(sqlite_url, name)
    path = tmp_path / "best.json"
    path.write_text(json.dumps(doc))
    out = subprocess.run(
        [sys.executable, "-m", "mtl_tune_cli.main", "train", "--config", str(path), "--device", "cpu", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["objective"] == pytest.approx(doc["values"][0], rel=1e-4)
