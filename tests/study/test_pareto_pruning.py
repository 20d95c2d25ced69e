"""The ``dominated`` pruner: early stopping for pareto studies, which no Optuna pruner prunes."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import select

import storage
from storage.metrics import rung_vectors
from storage.reports import task_metrics
from tests.study.helpers import QUICK_SPACE, TINY
from tuner.study import StudySpec, Worker, WorkerSettings, create_study, make_pruner
from tuner.study._dominance import MIN_DOMINATING, dominated_by, dominates
from tuner.study._samplers import prune_steps

MIN = {"a": "minimize", "b": "minimize"}
MIXED = {"acc": "maximize", "rmse": "minimize"}

# ----------------------------------------------------------------------------------------------------------------
# The dominance count


def test_dominance_needs_at_least_as_good_everywhere_and_better_somewhere() -> None:
    p = {"a": 1.0, "b": 1.0}
    assert dominates({"a": 0.5, "b": 1.0}, p, MIN)
    assert dominates({"a": 0.5, "b": 0.5}, p, MIN)
    assert not dominates({"a": 1.0, "b": 1.0}, p, MIN)  # equal: not strictly better anywhere
    assert not dominates({"a": 0.5, "b": 1.5}, p, MIN)  # a trade-off
    assert not dominates(p, {"a": 0.5, "b": 1.0}, MIN)


def test_dominance_follows_each_tasks_direction() -> None:
    p = {"acc": 0.8, "rmse": 1.0}
    assert dominates({"acc": 0.9, "rmse": 1.0}, p, MIXED)  # higher accuracy is better
    assert not dominates({"acc": 0.7, "rmse": 0.5}, p, MIXED)  # lower accuracy is worse
    assert dominates({"acc": 0.8, "rmse": 0.9}, p, MIXED)
    # The same numbers under the opposite directions say the opposite.
    assert not dominates({"acc": 0.9, "rmse": 1.0}, p, {"acc": "minimize", "rmse": "minimize"})
    with pytest.raises(ValueError, match="direction"):
        dominates({"acc": 0.9, "rmse": 1.0}, p, {"acc": "up", "rmse": "minimize"})


def test_non_finite_values_are_the_worst_and_missing_tasks_are_not_compared() -> None:
    diverged = {"a": math.nan, "b": 1.0}
    assert dominates({"a": 5.0, "b": 1.0}, diverged, MIN)
    assert not dominates(diverged, {"a": 5.0, "b": 1.0}, MIN)
    assert dominates({"a": 5.0, "b": 1.0}, {"a": None, "b": 1.0}, MIN)  # stored as null
    assert not dominates({"a": 0.1}, {"a": 1.0, "b": 1.0}, MIN)  # lacks task b


def test_dominated_by_counts_the_dominating_vectors() -> None:
    p = {"a": 1.0, "b": 1.0}
    others = [{"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 0.9}, {"a": 1.0, "b": 1.0}, {"a": 0.1, "b": 2.0}, {"a": 0.9}]
    assert dominated_by(p, others, MIN) == 2
    assert dominated_by(p, [], MIN) == 0
    assert dominated_by({}, others, MIN) == 0
    assert MIN_DOMINATING == 3


# ----------------------------------------------------------------------------------------------------------------
# Where it applies


def test_dominated_asks_at_the_hyperband_rungs_before_the_last_epoch_and_optuna_never_prunes() -> None:
    assert prune_steps("dominated", epochs=10, objective="pareto") == frozenset({1, 3, 9})
    assert prune_steps("dominated", epochs=9, objective="pareto") == frozenset({1, 3})
    assert prune_steps("hyperband", epochs=9, objective="scalar") == frozenset({1, 3, 9})
    assert prune_steps("none", epochs=9, objective="pareto") == frozenset()
    assert prune_steps("median", epochs=9, objective="pareto") == frozenset()
    assert isinstance(make_pruner("dominated", epochs=9, objective="pareto"), optuna.pruners.NopPruner)


def test_scalar_studies_refuse_the_dominated_pruner() -> None:
    with pytest.raises(ValidationError, match="pareto studies only") as caught:
        StudySpec(problem="uncertainty-toy", pruner="dominated")
    assert caught.value.errors()[0]["loc"] == ("pruner",)
    assert StudySpec(problem="uncertainty-toy", objective="pareto", pruner="dominated").effective_pruner == "dominated"
    assert StudySpec(problem="uncertainty-toy", objective="pareto").effective_pruner == "none"
    assert StudySpec(problem="uncertainty-toy", objective="pareto", pruner="median").effective_pruner == "none"


# ----------------------------------------------------------------------------------------------------------------
# A real pareto study

GOOD = {"strategy": "equal", "lr_shared": 0.05, "lr_heads": 0.05}
BAD = {"strategy": "equal", "lr_shared": 1e-7, "lr_heads": 1e-7}  # learns nothing


def _run(url: str, name: str, plan: list[tuple[str, dict[str, object]]]) -> optuna.Study:
    """A pareto study with the dominated pruner whose trials after the baseline are ``plan``, in order."""
    spec = StudySpec(
        name=name,
        problem="uncertainty-toy",
        problem_options=TINY,
        space=QUICK_SPACE,
        objective="pareto",
        sampler="random",
        pruner="dominated",
        epochs=4,  # asked after epochs 1 and 3
        n_trials=1 + len(plan),
        confirm_seeds=0,  # confirmation runs are tested on their own
    )
    create_study(url, spec, source="cli")
    study = optuna.load_study(study_name=name, storage=url)
    for role, params in plan:
        study.enqueue_trial(params, user_attrs={"role": role})
    Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu")).run()
    return study


def _recorded(url: str, name: str) -> tuple[dict[int, str], dict[int | None, str]]:
    """Each trial's summary state and claim state, by trial number."""
    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
        summaries = dict(
            session.execute(
                select(storage.TrialSummary.trial_number, storage.TrialSummary.state).where(
                    storage.TrialSummary.job_id == job.id
                )
            ).all()
        )
        claims = dict(
            session.execute(
                select(storage.TrialClaim.trial_number, storage.TrialClaim.state).where(
                    storage.TrialClaim.job_id == job.id
                )
            ).all()
        )
    return summaries, claims


def test_a_trial_dominated_by_enough_finished_trials_is_pruned_and_recorded_so(sqlite_url: str) -> None:
    study = _run(sqlite_url, "dominated", [("good", GOOD)] * MIN_DOMINATING + [("bad", BAD), ("good", GOOD)])
    trials = study.get_trials()
    assert [t.user_attrs.get("role") for t in trials] == [None, "good", "good", "good", "bad", "good"]
    bad = trials[4]
    assert bad.state == TrialState.PRUNED and bad.values is None
    assert all(t.state == TrialState.COMPLETE for t in trials if t.number != 4)  # baseline and good ones
    summaries, claims = _recorded(sqlite_url, "dominated")
    assert summaries[4] == claims[4] == "pruned"
    assert {summaries[n] for n in (0, 1, 2, 3, 5)} == {"complete"}
    # Pruned after its first epoch: only epoch 0's metrics were written.
    with storage.session_scope(sqlite_url) as session:
        job = storage.get_job(session, "dominated")
        curves = storage.trial_curves(session, job_id=job.id, trial_number=4)
        assert {row.epoch for row in curves} == {0}
        # The pruned trial's epoch-0 vector counts at epoch 0 from now on; at epoch 1 only trials that reached it.
        assert len(rung_vectors(session, job.id, 0)) == 6
        assert len(rung_vectors(session, job.id, 1)) == 5
        vectors = rung_vectors(session, job.id, 0)
    assert all(set(v) == {"y1", "y2"} for v in vectors)


def test_a_trial_dominated_by_fewer_finished_trials_runs_to_the_end(sqlite_url: str) -> None:
    # The baseline and one good trial: at most MIN_DOMINATING - 1 finished trials can dominate the bad one.
    study = _run(sqlite_url, "few", [("good", GOOD), ("bad", BAD)])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    summaries, claims = _recorded(sqlite_url, "few")
    assert summaries[2] == claims[2] == "complete"
    with storage.session_scope(sqlite_url) as session:
        job = storage.get_job(session, "few")
        vectors = rung_vectors(session, job.id, 0)
        assert {row.epoch for row in storage.trial_curves(session, job_id=job.id, trial_number=2)} == {0, 1, 2, 3}
    bad_vector = {name: t["metric"] for name, t in trials[2].user_attrs["tasks"].items()}
    assert bad_vector  # the last epoch's numbers are kept on the trial
    # The good trial did dominate it after epoch 1: what kept it running is the count, not the metrics.
    directions = {task: direction for task, (_, direction) in task_metrics(study).items()}
    assert directions == {"y1": "minimize", "y2": "minimize"}
    assert dominated_by(vectors[2], vectors[:2], directions) >= 1


def test_the_api_launches_dominated_pareto_studies_and_refuses_scalar_ones(sqlite_url: str) -> None:
    from tests.api.helpers import client_for, launch_body

    with client_for(sqlite_url) as client:
        refused = client.post("/api/studies", json=launch_body(name="s", pruner="dominated"))
        assert refused.status_code == 422, refused.text
        error = refused.json()["detail"][0]
        assert error["loc"] == ["body", "pruner"] and "pareto studies only" in error["msg"]
        launched = client.post("/api/studies", json=launch_body(name="p", objective="pareto", pruner="dominated"))
        assert launched.status_code == 201, launched.text
        assert launched.json()["pruner"] == "dominated"


def test_rung_vectors_are_those_of_finished_trials_at_that_epoch(sqlite_url: str) -> None:
    spec = StudySpec(name="reads", problem="uncertainty-toy", objective="pareto", pruner="dominated", confirm_seeds=0)
    create_study(sqlite_url, spec, source="cli")
    with storage.session_scope(sqlite_url) as session:
        job_id = storage.get_job(session, "reads").id
        for number, state in ((1, "complete"), (2, "pruned"), (3, "failed"), (4, None)):  # 4 is still running
            for epoch in (0, 1):
                rows = [
                    {"task": task, "train_loss": 1.0, "val_loss": 1.0, "metric": number + epoch / 10, "weight": 1.0}
                    for task in ("y1", "y2")
                ]
                storage.write_epoch(session, job_id=job_id, trial_number=number, epoch=epoch, rows=rows)
            if state is not None:
                storage.write_summary(
                    session, job_id=job_id, trial_number=number, state=state, values=None, params={},
                    task_metrics=None, duration_s=None, started_at=None, finished_at=None,
                )  # fmt: skip
    with storage.session_scope(sqlite_url) as session:
        assert rung_vectors(session, job_id, 0) == [{"y1": 1.0, "y2": 1.0}, {"y1": 2.0, "y2": 2.0}]
        assert rung_vectors(session, job_id, 1) == [{"y1": 1.1, "y2": 1.1}, {"y1": 2.1, "y2": 2.1}]
        assert rung_vectors(session, job_id, 2) == []
        assert rung_vectors(session, job_id + 1, 0) == []
