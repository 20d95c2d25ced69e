"""Many worker processes on one study: exact targets, crashes, dropped connections."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator

import optuna
import psycopg
import pytest
from optuna.trial import TrialState
from sqlalchemy import func, select

import storage
from api.workers import worker_environment
from mtl_tune_cli.worker_cmd import worker_command
from tests.pg import ADMIN_DSN, fresh_database
from tests.study.helpers import QUICK_SPACE
from tuner.study import StudySpec, create_study

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TOY = {"n_train": 300, "n_val": 100}


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("mtl_tune_workers") as url:
        yield url


def start_worker(url: str, study: str, *extra: str) -> subprocess.Popen[bytes]:
    """A worker process; its stderr is piped (read it with ``ended``, which no full pipe can block)."""
    cmd = worker_command(study, "--threads", "1", "--poll", "0.5", *extra)
    env = worker_environment(url) | {"PYTHONFAULTHANDLER": "1"}  # SIGABRT dumps every thread's stack
    # Started as from a terminal, whatever this process inherited (under nohup, hangups are ignored, and a worker
    # keeps ignoring them when its parent does).
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    finally:
        signal.signal(signal.SIGHUP, previous)


def ended(worker: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    """The worker's exit code and stderr once it ends; one still running after ``timeout`` is aborted and the
    assertion shows where each of its threads was."""
    try:
        _, err = worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGABRT)
        _, err = worker.communicate(timeout=30)
        stacks = err.decode(errors="replace")[-8000:]
        raise AssertionError(f"the worker did not end in {timeout} s:\n{stacks}") from None
    return worker.returncode, err.decode(errors="replace")


def launch(
    url: str, name: str, n_trials: int, epochs: int = 2, problem: str = "uncertainty-toy", options: dict | None = None
) -> None:
    spec = StudySpec(
        name=name,
        problem=problem,
        problem_options=options or TOY,
        n_trials=n_trials,
        epochs=epochs,
        sampler="random",
        pruner="median",
        space=QUICK_SPACE,
    )
    create_study(url, spec, source="cli")


def finished_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(url))
    return [t for t in study.get_trials() if t.state in FINISHED]


def assert_exact_target(url: str, name: str, target: int) -> None:
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(url))
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == target
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
        assert job.status == "completed"
        for t in finished:
            epochs = session.scalar(
                select(func.count(func.distinct(storage.EpochMetric.epoch))).where(
                    storage.EpochMetric.job_id == job.id, storage.EpochMetric.trial_number == t.number
                )
            )
            assert epochs == len(t.intermediate_values), t.number


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float = 300) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err.decode()[-2000:]


@pytest.mark.slow
def test_three_workers_reach_exactly_the_target_on_postgres(pg_url: str) -> None:
    launch(pg_url, "three", n_trials=12)
    wait_all([start_worker(pg_url, "three", "--exit-when-idle") for _ in range(3)])
    assert_exact_target(pg_url, "three", 12)


@pytest.mark.slow
def test_two_local_workers_on_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    launch(url, "two", n_trials=8)
    wait_all([start_worker(url, "two", "--exit-when-idle") for _ in range(2)])
    assert_exact_target(url, "two", 8)


@pytest.mark.slow
def test_a_killed_worker_is_failed_after_the_grace_period_and_retried(pg_url: str) -> None:
    launch(pg_url, "crash", n_trials=2, epochs=30, problem="gradnorm-toy", options={"n_train": 300, "n_val": 100})
    beat = ("--heartbeat", "1", "--grace", "4")
    victim = start_worker(pg_url, "crash", *beat)
    running = _wait_for_running_trial(pg_url, "crash", min_epochs=1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    completed_before = {t.number for t in finished_trials(pg_url, "crash") if t.state == TrialState.COMPLETE}
    wait_all([start_worker(pg_url, "crash", "--exit-when-idle", *beat)])

    study = optuna.load_study(study_name="crash", storage=storage.optuna_storage(pg_url))
    killed = study.get_trials()[running]
    assert killed.state == TrialState.FAIL
    retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == running]
    assert retried and retried[0].state in FINISHED
    assert completed_before <= {t.number for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert_exact_target(pg_url, "crash", 2)


@pytest.mark.slow
def test_workers_reconnect_after_their_connections_are_killed(pg_url: str) -> None:
    launch(pg_url, "cut", n_trials=6, epochs=6, problem="gradnorm-toy", options={"n_train": 300, "n_val": 100})
    procs = [start_worker(pg_url, "cut", "--exit-when-idle", "--heartbeat", "1", "--grace", "5") for _ in range(2)]
    _wait_for_running_trial(pg_url, "cut", min_epochs=1)
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> "
            "pg_backend_pid()",
            (database,),
        ).fetchone()
    assert killed and killed[0] >= 1
    wait_all(procs)
    assert_exact_target(pg_url, "cut", 6)


def _wait_for_running_trial(url: str, name: str, *, min_epochs: int, timeout: float = 120) -> int:
    """The number of a RUNNING trial that has reported at least ``min_epochs`` epochs."""
    deadline = time.time() + timeout
    study = optuna.load_study(study_name=name, storage=storage.optuna_storage(url))
    while time.time() < deadline:
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if len(t.intermediate_values) >= min_epochs:
                return t.number
        time.sleep(0.2)
    raise AssertionError(f"no trial of {name!r} reached epoch {min_epochs} in {timeout} s")


def test_a_worker_logs_one_line_per_trial(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'lines.db'}"
    launch(url, "lines", n_trials=2, epochs=1)
    _, err = start_worker(url, "lines", "--exit-when-idle").communicate(timeout=300)
    lines = [line for line in err.decode().splitlines() if "[mtl_tune.worker]" in line and " objective " in line]
    assert len(lines) == 2, err.decode()
    assert all(re.search(r"study lines trial \d+ complete objective [0-9.]+ [0-9.]+ s$", line) for line in lines)
