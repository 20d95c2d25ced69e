"""A fresh database that several processes start on at once: `mtl-tune worker`, `serve`, `study run` and
`db upgrade` launched together, round after round, on SQLite and on PostgreSQL. The schema is created once,
every study completes and every process survives.

Processes that import torch start seconds later than those that do not, so each one's first touch of the
database is held back until all of them have reached it: they then set the database up at the same moment.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import optuna
import psycopg
import pytest
from optuna.trial import TrialState

import storage
from storage._schema import PG_LOCK_KEY
from tests.e2e.helpers import free_port, wait_for
from tests.pg import fresh_database

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MTL = [sys.executable, "-m", "mtl_tune_cli.main"]
ROUNDS = 3
STUDY = "fresh"
TRIALS = 3


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        storage.dispose_engines()
    else:
        with fresh_database("mtl_tune_fresh") as url:
            yield url


class Launch:
    """Processes started together, each logging to its own file; every one still running is killed at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {k: v for k, v in os.environ.items() if k != "MTL_TUNE_API_TOKEN"} | {
            "COLUMNS": "200", "MTL_TUNE_TOKEN_FILE": str(log_dir / "api-token")}  # fmt: skip

    def start(self, name: str, *args: str) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [*MTL, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.processes[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not end within {timeout:.0f} s\n{self.logs()}") from None

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    def any_ended(self) -> bool:
        return any(p.poll() is not None for p in self.processes.values())

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def logs(self) -> str:
        return "\n".join(f"--- {p.stem}\n{p.read_text(errors='replace')[-3000:]}" for p in self.log_dir.glob("*.log"))

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def gate(url: str) -> Iterator[Callable[[list[int]], int]]:
    """Hold back every process's first touch of the database; yields how many of the given processes wait.

    SQLite: an exclusive lock on the file, which their connections wait for (the busy timeout). PostgreSQL: the
    schema lock, which processes finding an empty database wait for before setting it up.
    """
    if url.startswith("sqlite"):
        path = os.path.realpath(url.removeprefix("sqlite:///"))
        file_lock = sqlite3.connect(path, isolation_level=None)
        file_lock.execute("BEGIN EXCLUSIVE")
        try:
            yield lambda pids: sum(_has_open(pid, path) for pid in pids)
        finally:
            file_lock.close()
        return
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK_KEY,))
        waiting = (
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()"
        )
        yield lambda _pids: int(lock.execute(waiting).fetchall()[0][0])


def _has_open(pid: int, path: str) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == path for fd in fds.iterdir())
    except OSError:  # the process ended
        return False


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_starting_together_on_a_fresh_database_all_get_their_work_done(
    fresh_url: str, tmp_path: Path, round_: int
) -> None:
    port = free_port()
    launch = Launch(tmp_path)
    try:
        with gate(fresh_url) as waiting:
            launch.start("worker", "worker", "--storage", fresh_url, "--poll", "0.1", "--threads", "1")
            launch.start("serve", "serve", "--storage", fresh_url, "--port", str(port), "--workers", "0")
            launch.start(
                "study-run", "study", "run", "--storage", fresh_url, "--problem", "uncertainty-toy", "--study", STUDY,
                "--trials", str(TRIALS), "--epochs", "2", "--workers", "0", "--sampler", "random",
                "--option", "n_train=100", "--option", "n_val=50",
            )  # fmt: skip
            launch.start("db-upgrade", "db", "upgrade", "--storage", fresh_url)
            everyone = len(launch.processes)
            wait_for(
                lambda: waiting(launch.pids()) == everyone or launch.any_ended(), 60, "every process to reach the db"
            )

        assert launch.wait("db-upgrade", 120) == 0, launch.logs()
        assert launch.wait("study-run", 240) == 0, launch.logs()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        study = wait_for(lambda: client.get(f"/api/studies/{STUDY}").json(), 90, "serve to answer")
        assert launch.alive("worker") and launch.alive("serve"), launch.logs()
    finally:
        launch.kill_all()

    assert study["status"] == "completed", launch.logs()
    # No slot was lost on the way (a claim whose trial never started is freed only after the grace period).
    assert study["trials"]["complete"] + study["trials"]["pruned"] == TRIALS and study["trials"]["failed"] == 0
    trials = optuna.load_study(study_name=STUDY, storage=storage.normalize_url(fresh_url)).get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == TRIALS
    assert trials[0].user_attrs["baseline"] is True
    assert storage.current_revision(fresh_url) == storage.head_revision()
