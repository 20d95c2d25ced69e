"""End to end on PostgreSQL: connections dropped under a real ``mtl-tune serve`` (``pg_terminate_backend``, as an
administrator or a restarted pooler does) never leave a half-created study behind.

A launch is all or nothing: a study whose POST met a dropped connection either exists whole (and runs) or not at all,
or, where it cannot be told apart, is failed with a reason; never a job row without its Optuna study that every
worker picks, exits on and is restarted for while the other studies starve.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import psycopg
import pytest

import storage
from tests.dropped_connections import terminate_backends
from tests.e2e.helpers import wait_for
from tests.e2e.test_serve import Server, _processes_using
from tests.pg import ADMIN_DSN, fresh_database

pytestmark = pytest.mark.slow


def _body(name: str) -> dict[str, Any]:
    return {"name": name, "problem": "uncertainty-toy", "problem_options": {"n_train": 64, "n_val": 32}, "epochs": 1,
            "n_trials": 2, "sampler": "random", "space": {"strategy": ["equal", "uncertainty"]}}  # fmt: skip


class Terminator:
    """Terminates every backend of one database (but its own) once, or over and over from a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._admin = psycopg.connect(ADMIN_DSN, autocommit=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def once(self) -> int:
        return terminate_backends(self.url, self._admin)

    def start(self, every: float) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(every):
                self.once()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._admin.close()


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[tuple[Server, Terminator]]:
    with fresh_database() as url:
        server = Server(url, tmp_path / "serve.log")
        terminator = Terminator(url)
        try:
            yield server, terminator
        finally:
            terminator.close()
            server.kill_group()
            for pid in _processes_using(tmp_path):
                os.kill(pid, signal.SIGKILL)
            storage.dispose_engines()


def test_a_launch_that_meets_dropped_connections_is_all_or_nothing(
    pg_server: tuple[Server, Terminator], tmp_path: Path
) -> None:
    server, terminator = pg_server
    client = server.start(workers=1)
    wait_for(lambda: client.get("/api/health").json()["local_workers_alive"] == 1, 60, "the worker to start")

    # Every backend dies before the POST (serve's pooled connections, the worker's), as in the report that found
    # the half-created study; then over and over while more studies are created, so that whichever statement of a
    # launch meets a dead connection, the study is created whole or not at all.
    assert terminator.once() > 0
    statuses = {"first": client.post("/api/studies", json=_body("first")).status_code}
    terminator.start(every=0.005)
    for n in range(4):
        statuses[f"first-{n}"] = client.post("/api/studies", json=_body(f"first-{n}")).status_code
    terminator.stop()
    assert set(statuses.values()) <= {201, 503}, statuses

    # What a launch cut off half-way once left: a job row whose Optuna study is missing. The worker fails it with
    # the reason and goes on; it does not exit on it and get restarted for it again and again.
    _job_without_its_study(server.url, "broken")
    time.sleep(1.5)  # pooled connections idle this long are pinged (and replaced) before use
    second = client.post("/api/studies", json=_body("second"))
    assert second.status_code == 201, second.text

    # Backends dropped again while the worker runs "second".
    wait_for(lambda: _trials_started(client, "second"), 60, "a trial of 'second' to start")
    terminator.once()

    done = wait_for(lambda: _settled(client, "second"), 90, f"'second' to complete\n{_log(tmp_path)}")
    assert done["status"] == "completed", (done, _log(tmp_path))
    assert done["trials"]["complete"] + done["trials"]["pruned"] == 2

    for name, status in statuses.items():
        if status == 201:
            settled = wait_for(lambda: _settled(client, name), 60, f"{name!r} to complete\n{_log(tmp_path)}")  # noqa: B023
            assert settled["status"] == "completed", (settled, _log(tmp_path))
        _assert_whole_or_failed_with_reason(server.url, name)

    broken = wait_for(lambda: _settled(client, "broken"), 60, f"'broken' to be failed\n{_log(tmp_path)}")
    assert broken["status"] == "failed" and "broken" in broken["last_error"], broken

    health = client.get("/api/health").json()
    assert health["local_workers_alive"] == 1, health
    assert "exited with code" not in _log(tmp_path), _log(tmp_path)  # the worker never died, so never restarted


def _job_without_its_study(url: str, name: str) -> None:
    with storage.session_scope(url) as session:
        storage.create_job(session, study_name=name, problem="uncertainty-toy", problem_options={}, space=None,
                           objective="scalar", directions=["minimize"], sampler="random", pruner="median", epochs=1,
                           n_trials=2, seed=0, source="rest")  # fmt: skip


def _assert_whole_or_failed_with_reason(url: str, name: str) -> None:
    """No job without its Optuna study, unless that job is failed and says why."""
    with storage.session_scope(url) as session:
        job = storage.find_job(session, name)
        status, error = (None, None) if job is None else (job.status, job.last_error)
    in_optuna = name in {s.study_name for s in optuna.get_all_study_summaries(storage=url)}
    if job is not None and not in_optuna:
        assert status == "failed" and error, f"job {name!r} has no Optuna study and is {status} ({error})"


def _trials_started(client: httpx.Client, name: str) -> bool:
    response = client.get(f"/api/studies/{name}/trials")
    return response.status_code == 200 and response.json()["total"] > 0


def _settled(client: httpx.Client, name: str) -> dict[str, Any] | None:
    response = client.get(f"/api/studies/{name}")
    if response.status_code != 200:
        return None
    study: dict[str, Any] = response.json()
    return study if study["status"] in ("completed", "failed", "stopped") else None


def _log(tmp_path: Path) -> str:
    return (tmp_path / "serve.log").read_text(errors="replace")
