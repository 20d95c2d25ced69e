"""Confirmation runs: the chosen configurations trained again over fresh seeds, judged on the test split, through the
workers and claims, without touching the study's target or its sampler; on SQLite and PostgreSQL."""

from __future__ import annotations

import statistics
import threading
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
from sqlalchemy import select, update

import storage
from storage.confirmations import (
    MAX_ATTEMPTS,
    NothingToConfirm,
    claim_run,
    confirmation_seeds,
    finish_run,
    release_run,
    request_confirmation,
)
from storage.models import ConfirmationRun, utcnow
from tests.pg import fresh_database
from tests.study.helpers import TINY, run_study
from tuner.config import TrainConfig
from tuner.problems import create_problem
from tuner.study import Worker, WorkerSettings
from tuner.train import train
from tuner.verdict import study_verdict

SPACE = {"strategy": ["equal", "static", "dwa"]}
OPTIONS = {**TINY, "n_test": 150}


@pytest.fixture
def url(backend_url: str) -> str:
    return backend_url


def _runs(url: str, name: str) -> list[ConfirmationRun]:
    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
        runs = list(session.scalars(select(ConfirmationRun).where(ConfirmationRun.job_id == job.id)))
        session.expunge_all()
    return runs


def test_reaching_the_target_confirms_on_the_test_split_outside_the_sampler(url: str) -> None:
    name = run_study(url, n_trials=6, space=SPACE, problem_options=OPTIONS, confirm_seeds=2, seed=3)

    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
        counts = storage.claim_counts(session, name)
        assert (job.status, job.confirm_pending) == ("completed", False)
    # The runs never count toward the target and never reach Optuna: every Optuna trial is one the claims counted,
    # trained with the study's own seed, so the sampler saw nothing of the confirmation.
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(url))
    assert len(study.trials) == sum(counts.values()) == 6
    assert {t.user_attrs["config"]["seed"] for t in study.trials} == {3}

    runs = _runs(url, name)
    seeds = confirmation_seeds(3, 2)
    assert {r.state for r in runs} == {"complete"} and {r.seed for r in runs} == set(seeds)
    roles = {role for r in runs for role in r.roles}
    assert {"baseline", "best"} <= roles and any(role.startswith("best ") for role in roles)
    by_trial: dict[int, list[ConfirmationRun]] = {}
    for run in runs:
        by_trial.setdefault(run.trial_number, []).append(run)
    assert all(sorted(r.seed for r in rs) == seeds for rs in by_trial.values())  # the same seeds for every one

    # The verdict's numbers are the test split's: train one run's configuration again and compare.
    verdict = study_verdict(url, name)
    assert (verdict["status"], verdict["split"], verdict["optimistic"]) == ("complete", "test", False)
    assert verdict["provisional"] is False
    best = next(c for c in verdict["candidates"] if "best" in c["roles"])
    problem = create_problem("uncertainty-toy", OPTIONS)
    again = [train(problem, TrainConfig.model_validate(r.config), device="cpu") for r in by_trial[best["trial"]]]
    for task, numbers in best["tasks"].items():
        on_test = [result.test[task]["metric"] for result in again if result.test]
        on_val = [result.final.tasks[task].metric for result in again]
        assert numbers["mean"] == pytest.approx(statistics.fmean(on_test), rel=1e-5)
        assert numbers["mean"] != pytest.approx(statistics.fmean(on_val), rel=1e-3)
        assert numbers["n"] == 2 and numbers["judgement"] in ("better", "worse", "within noise")
    assert verdict["sentence"]
    assert set(verdict["judgements"]) == set(best["tasks"])


def test_nothing_to_confirm_before_a_trial_completes(url: str) -> None:
    from tuner.study import StudySpec, create_study

    spec = StudySpec.model_validate({"problem": "uncertainty-toy", "problem_options": OPTIONS, "n_trials": 2})
    name = create_study(url, spec, source="cli").study_name
    with pytest.raises(NothingToConfirm, match="no complete trial"), storage.session_scope(url) as session:
        request_confirmation(session, name, seeds=2, top=1)
    with pytest.raises(ValueError, match="2 to 50"), storage.session_scope(url) as session:
        request_confirmation(session, name, seeds=1, top=1)
    assert study_verdict(url, name)["status"] == "not requested"


def _confirmed_study(url: str, seeds: int = 2) -> str:
    name = run_study(url, n_trials=3, space={"strategy": ["equal", "dwa"]}, problem_options=OPTIONS)
    with storage.session_scope(url) as session:
        request_confirmation(session, name, seeds=seeds, top=1)
    return name


def _queue(url: str, name: str) -> None:
    """What a worker does first with a pending confirmation: choose its configurations and queue their runs."""
    worker = Worker(WorkerSettings(url=url, study_name=name, device="cpu"))
    with storage.session_scope(url) as session:
        info = storage.get_job(session, name)
        from tuner.study import JobInfo

        job = JobInfo.of(info)
    worker._queue_confirmation(job)


def test_a_silent_workers_run_is_taken_over_and_failed_after_the_last_attempt(url: str) -> None:
    name = _confirmed_study(url)
    _queue(url, name)
    first = claim_run(url, worker="a:1", grace_seconds=60, study_name=name)
    assert first is not None
    second = claim_run(url, worker="b:2", grace_seconds=60, study_name=name)
    assert second is not None and second.id != first.id  # a held run is not handed out twice

    def silence(run_id: int) -> None:
        with storage.session_scope(url) as session:
            stale = utcnow() - timedelta(seconds=120)
            session.execute(update(ConfirmationRun).where(ConfirmationRun.id == run_id).values(heartbeat_at=stale))

    for attempt in range(2, MAX_ATTEMPTS + 1):
        silence(first.id)
        taken = claim_run(url, worker=f"w:{attempt}", grace_seconds=60, study_name=name)
        assert taken is not None and taken.id == first.id  # the oldest claimable run: the silent one
    # The first worker comes back: its result is not recorded over the run's new owner.
    with storage.session_scope(url) as session:
        assert not finish_run(session, first.id, worker="a:1", split="test", results={})
    silence(first.id)
    nxt = claim_run(url, worker="c:3", grace_seconds=60, study_name=name)
    assert nxt is not None and nxt.id not in (first.id, second.id)
    run = next(r for r in _runs(url, name) if r.id == first.id)
    assert run.state == "failed" and f"lost its worker {MAX_ATTEMPTS} times" in (run.fail_reason or "")

    with storage.session_scope(url) as session:  # an interrupted worker gives its run back at once
        release_run(session, nxt.id, worker="c:3")
    again = claim_run(url, worker="d:4", grace_seconds=60, study_name=name)
    assert again is not None and again.id == nxt.id
    # Given back any number of times (Ctrl-C), a run never uses up the attempts meant for silent workers.
    for i in range(MAX_ATTEMPTS + 1):
        with storage.session_scope(url) as session:
            release_run(session, nxt.id, worker=f"d:{4 + i}")
        taken = claim_run(url, worker=f"d:{5 + i}", grace_seconds=60, study_name=name)
        assert taken is not None and taken.id == nxt.id
    assert next(r for r in _runs(url, name) if r.id == nxt.id).attempts == 1


@pytest.mark.postgres
def test_concurrent_claimers_never_share_a_run(tmp_path: Path) -> None:
    with fresh_database("mtl_tune_confirm") as url:
        name = _confirmed_study(url, seeds=4)
        _queue(url, name)
        total = len(_runs(url, name))
        taken: list[int] = []
        lock = threading.Lock()

        def claim(worker: str) -> None:
            while (run := claim_run(url, worker=worker, grace_seconds=60)) is not None:
                with lock:
                    taken.append(run.id)

        threads = [threading.Thread(target=claim, args=(f"w:{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken) == sorted({r.id for r in _runs(url, name)}) and len(taken) == total


def test_a_study_confirmed_while_it_searches_gets_a_provisional_verdict(sqlite_url: str) -> None:
    name = run_study(sqlite_url, n_trials=6, workers_trials=3, problem_options=OPTIONS, confirm_seeds=0)
    with storage.session_scope(sqlite_url) as session:
        request_confirmation(session, name, seeds=2)
    Worker(WorkerSettings(url=sqlite_url, study_name=name, exit_when_idle=True, confirm_only=True)).run()
    verdict = study_verdict(sqlite_url, name)
    assert verdict["status"] == "complete" and verdict["provisional"] is True
    with storage.session_scope(sqlite_url) as session:  # it confirms again at its target, with as many seeds
        assert storage.get_job(session, name).confirm_seeds == 2


def test_runs_are_taken_seed_by_seed_so_pairs_finish_first(url: str) -> None:
    name = _confirmed_study(url, seeds=3)
    _queue(url, name)
    configurations = len({r.trial_number for r in _runs(url, name)})
    taken = [claim_run(url, worker=f"w:{i}", grace_seconds=60, study_name=name) for i in range(configurations)]
    assert {t.seed for t in taken if t is not None} == {confirmation_seeds(0, 1)[0]}
    assert len({t.trial_number for t in taken if t is not None}) == configurations


def test_a_request_without_seeds_keeps_the_studys_own(url: str) -> None:
    name = _confirmed_study(url, seeds=4)
    with storage.session_scope(url) as session:
        job = request_confirmation(session, name)
        assert job.confirm_seeds == 4
    for seeds, top in ((1, 1), (51, 1), (3, 0), (3, 21)):
        with pytest.raises(ValueError, match=r"seeds|top"), storage.session_scope(url) as session:
            request_confirmation(session, name, seeds=seeds, top=top)


def test_asking_again_reuses_finished_runs_and_adds_seeds(url: str) -> None:
    name = _confirmed_study(url)
    Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu")).run()
    before = {(r.trial_number, r.seed): r.finished_at for r in _runs(url, name)}
    assert before and all(before.values())
    with storage.session_scope(url) as session:
        request_confirmation(session, name, seeds=3, top=1)
    Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu", confirm_only=True)).run()
    after = {(r.trial_number, r.seed): r.finished_at for r in _runs(url, name)}
    assert {k: after[k] for k in before} == before  # not trained again
    assert len(after) == len(before) // 2 * 3
    verdict = study_verdict(url, name)
    assert verdict["status"] == "complete" and verdict["seeds"] == confirmation_seeds(0, 3)
    assert all(len(c["seeds"]) == 3 for c in verdict["candidates"])


def test_a_pareto_study_confirms_its_pareto_set(sqlite_url: str) -> None:
    name = run_study(sqlite_url, n_trials=5, objective="pareto", sampler="random", problem_options=OPTIONS,
                     confirm_seeds=2)  # fmt: skip
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(sqlite_url))
    front = {t.number for t in study.best_trials}
    verdict = study_verdict(sqlite_url, name)
    confirmed = {c["trial"] for c in verdict["candidates"] if "pareto" in c["roles"]}
    assert confirmed == front and verdict["status"] == "complete" and verdict["split"] == "test"
    assert any("baseline" in c["roles"] for c in verdict["candidates"])
    assert "Pareto configurations beat the default on every task" in verdict["sentence"]


def test_without_a_test_split_the_verdict_says_it_is_optimistic(sqlite_url: str, tmp_path: Path) -> None:
    from tests.tuner.problems.test_csv_problem import write_table

    data = write_table(tmp_path / "shop.csv", n=120)
    options = {"data": str(data), "target": ["price:regression", "churn:classification"], "test_fraction": 0}
    name = run_study(sqlite_url, problem="csv", problem_options=options, n_trials=3, confirm_seeds=2,
                     space={"strategy": ["equal", "dwa"]})  # fmt: skip
    verdict = study_verdict(sqlite_url, name)
    assert verdict["status"] == "complete"
    assert (verdict["split"], verdict["optimistic"]) == ("validation", True)
