"""A worker that stays alive while studies are deleted and created: ids the database hands out again (SQLite
reuses a deleted row's id) or names that come back never make it read or tell another study's trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import storage
from storage.reports import delete_study
from tests.study.helpers import QUICK_SPACE, TINY
from tuner.study import StudySpec, Worker, WorkerSettings, create_study

ROUNDS = 4


@pytest.fixture
def url(backend_url: str) -> str:
    return backend_url


def launch(url: str, name: str, space: dict) -> None:
    spec = StudySpec(
        name=name, problem="uncertainty-toy", problem_options=TINY, n_trials=2, epochs=1, sampler="random", space=space
    )
    create_study(url, spec, source="cli")


def test_delete_and_create_while_a_worker_is_alive(url: str) -> None:
    worker = Worker(WorkerSettings(url=url, exit_when_idle=True, poll_seconds=0.05, device="cpu"))
    # The same name comes back with another search space: what the worker knew of the old study must not count.
    spaces = [QUICK_SPACE, {"strategy": ["static"], "weights": {"low": 0.5, "high": 0.6, "log": False}}]
    for round_ in range(ROUNDS):
        name = "again" if round_ % 2 == 0 else f"other-{round_}"
        launch(url, name, spaces[round_ % 2])
        worker.run()
        trials = optuna.load_study(study_name=name, storage=storage.normalize_url(url)).get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE], (round_, trials)
        with storage.session_scope(url) as session:
            progress = storage.study_progress(session, name)
        assert (progress.status, progress.complete, progress.failed) == ("completed", 2, 0), round_
        delete_study(url, name)
