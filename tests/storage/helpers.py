"""Shared test data and the code claimer processes run (importable by spawned children)."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from typing import Any

import optuna
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import storage
from storage.epochs import TrialRecorder

JOB_DEFAULTS: dict[str, Any] = {
    "problem": "uncertainty-toy",
    "problem_options": {"n": 64},
    "space": {"strategy": ["equal", "uncertainty"]},
    "objective": "scalar",
    "directions": ["minimize"],
    "sampler": "tpe",
    "pruner": "median",
    "epochs": 5,
    "n_trials": 10,
    "seed": 0,
    "source": "cli",
}


def rows(*tasks: str, **extra: Any) -> list[dict[str, Any]]:
    """One epoch's metric rows, one per task."""
    return [{"task": t, "train_loss": 1.0, "val_loss": 0.5, "metric": 0.9, "weight": 1.0, **extra} for t in tasks]


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def claim_repeatedly(url: str, study_name: str, worker: str, attempts: int, fail_ratio: float, start: Any) -> list[int]:
    """Run in a child process: claim ``attempts`` times, finishing claims at once (some as failed) or holding them.

    ``start`` is a barrier, so every process contends from the first attempt.
    """
    rng = random.Random(worker)
    claimed = []
    storage.get_engine(url).connect().close()
    start.wait(60)
    for _ in range(attempts):
        claim_id = storage.claim_slot(url, study_name=study_name, worker=worker, grace_seconds=600)
        if claim_id is None:
            time.sleep(0.002)
            continue
        claimed.append(claim_id)
        if fail_ratio > 0:
            state = "failed" if rng.random() < fail_ratio else "complete"
            with storage.session_scope(url) as session:
                storage.finish_claim(session, claim_id, state=state)
    storage.dispose_engines()
    return claimed


def set_up_in_child(url: str, how: str, start: Any) -> str | None:
    """Run in a child process: meet an empty database with ``ensure_schema``, Optuna's storage or ``upgrade``."""
    start.wait(60)
    if how == "ensure":
        storage.ensure_schema(url)
    elif how == "optuna":
        storage.optuna_storage(url)
    else:
        storage.upgrade(url)
    revision = storage.current_revision(url)
    storage.dispose_engines()
    return revision


class Processes:
    """A pool of spawned processes kept for the whole session (spawning costs about a second each)."""

    size = 4

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self._pool = ctx.Pool(self.size)

    def run(self, target: Any, args: list[tuple[Any, ...]], timeout: float = 120) -> list[Any]:
        """``target(*a, barrier)`` for each ``a`` in ``args``, each in its own process, all started together."""
        assert len(args) <= self.size, "more tasks than processes would deadlock on the barrier"
        barrier = self._manager.Barrier(len(args))
        return self._pool.starmap_async(target, [(*a, barrier) for a in args], chunksize=1).get(timeout)

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()
        self._manager.shutdown()


def held_trial(
    url: str, make_job: Callable[..., storage.StudyJob], **job: Any
) -> tuple[storage.StudyJob, int, optuna.Study, optuna.Trial, TrialRecorder]:
    """A job ``s``, a claim of it, and a held trial with one parameter, with its recorder as its finisher."""
    made = make_job(study_name="s", **job)
    claim = storage.claim_slot(url, study_name="s", worker="w", grace_seconds=60)
    assert claim is not None
    rdb = storage.worker_storage(url)
    study = optuna.create_study(study_name="s", storage=rdb)
    trial = study.ask()
    rdb.hold(trial_id(url, trial), rdb.get_study_id_from_name("s"))
    trial.suggest_int("layers", 1, 4)
    recorder = TrialRecorder(
        url, rdb, job_id=made.id, job_created_at=made.created_at, claim_id=claim, trial_id=trial_id(url, trial),
        trial_number=trial.number,
    )  # fmt: skip
    rdb.hold(trial_id(url, trial), rdb.get_study_id_from_name("s"), finisher=recorder.finish)
    return made, claim, study, trial, recorder


def outside_trial(url: str, name: str = "s") -> optuna.trial.FrozenTrial:
    """The newest trial of study ``name`` as another process sees it: a plain Optuna storage of its own."""
    plain = optuna.storages.RDBStorage(storage.normalize_url(url))
    try:
        return optuna.load_study(study_name=name, storage=plain).trials[-1]
    finally:
        plain.engine.dispose()


def trial_id(url: str, trial: optuna.Trial | optuna.trial.FrozenTrial, study: str = "s") -> int:
    """A trial's storage id, through Optuna's public storage interface (a ``Trial`` keeps it private); from memory
    for a trial the worker storage created or holds."""
    rdb = storage.worker_storage(url)
    return rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name(study), trial.number)


def shown_states(url: str, name: str = "s") -> dict[str, int]:
    """The trial counts by state that ``mtl-tune study show`` prints (states with no trial left out)."""
    from typer.testing import CliRunner

    from mtl_tune_cli.main import app

    out = CliRunner().invoke(app, ["study", "show", name, "--storage", url])
    assert out.exit_code == 0, out.output
    line = next(line for line in out.output.splitlines() if line.startswith("trials: "))
    if line == "trials: none yet":
        return {}
    return {state: int(n) for state, n in (item.split() for item in line.removeprefix("trials: ").split(", "))}
