"""End to end over real HTTP: ``mtl-tune serve`` with one local worker runs a study launched by a POST; after a
restart everything is still there, and the database is still a plain Optuna storage. Its workers end with it, even
when it is killed; changes need the token it made on its first start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest

import storage
from tests.e2e.helpers import free_port, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BODY = {"name": "e2e", "problem": "uncertainty-toy", "problem_options": {"n_train": 200, "n_val": 100}, "epochs": 2,
        "n_trials": 3, "sampler": "random"}  # fmt: skip


def _processes_using(path: Path) -> list[int]:
    """Pids of live processes whose command line or environment mentions ``path`` (the serve process, and its
    workers, which get the storage URL through the environment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                mentions = any(str(path).encode() in (entry / part).read_bytes() for part in ("cmdline", "environ"))
                if mentions and not _zombie(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _zombie(pid: int) -> bool:
    """Exited, and not yet reaped (a parent that died leaves its children to a reaper that may be slow)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return children


class Server:
    def __init__(self, url: str, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url, self.log = url, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, workers: int) -> httpx.Client:
        cmd = [sys.executable, "-m", "mtl_tune_cli.main", "serve", "--port", str(self.port), "--storage", self.url,
               "--workers", str(workers)]  # fmt: skip
        # No token set: serve makes one on its first start and keeps it in the token file for the next.
        env = {k: v for k, v in os.environ.items() if k != "MTL_TUNE_API_TOKEN"}
        env["MTL_TUNE_TOKEN_FILE"] = str(self.token_file)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env, start_new_session=True)
        client = httpx.Client(base_url=self.base, timeout=30)
        wait_for(lambda: client.get("/api/health").status_code == 200, 90, "the server to answer")
        client.headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        return client

    @property
    def token_file(self) -> Path:
        return self.log.parent / "api-token"

    def stop(self) -> None:
        """SIGTERM to the serve process only: it stops its workers itself, then exits (uvicorn re-raises the
        signal after a graceful shutdown, so the exit status is the signal's)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) in (0, -signal.SIGTERM)

    def kill_group(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(f"sqlite:///{tmp_path / 'e2e.db'}", tmp_path / "serve.log")
    yield server
    server.kill_group()
    for pid in _processes_using(tmp_path):
        os.kill(pid, signal.SIGKILL)
    storage.dispose_engines()


def test_serve_runs_a_posted_study_and_keeps_it_across_restarts(server: Server, tmp_path: Path) -> None:
    client = server.start(workers=1)
    assert client.get("/api/health").json()["workers_alive"] == 1
    assert client.get("/docs").status_code == 200

    assert httpx.post(f"{server.base}/api/studies", json=BODY).status_code == 401  # no token, no change
    created = client.post("/api/studies", json=BODY)
    assert created.status_code == 201, created.text
    wait_for(lambda: _completed(client), 180, "the study to complete")
    # Reaching its target queued the confirmation, which the same worker runs: the verdict, over real HTTP.
    verdict = wait_for(lambda: _confirmed(client), 180, "the confirmation to complete")
    assert verdict["split"] == "test" and verdict["runs"]["complete"] == 3 * len(verdict["candidates"])
    study = client.get("/api/studies/e2e").json()
    assert study["trials"]["complete"] + study["trials"]["pruned"] == 3
    trials = client.get("/api/studies/e2e/trials").json()
    assert trials["total"] == 3 and [t["number"] for t in trials["items"]] == [0, 1, 2]
    trial = client.get("/api/studies/e2e/trials/1").json()
    assert trial["config"] and trial["epochs"][0]["epoch"] == 0 and set(trial["epochs"][0]["tasks"]) == {"y1", "y2"}
    history = client.get("/api/studies/e2e/history").json()["items"]

    server.stop()
    assert _processes_using(tmp_path) == [], (tmp_path / "serve.log").read_text()  # the worker stopped too

    token = server.token_file.read_text()
    client = server.start(workers=0)
    assert server.token_file.read_text() == token  # the same token after a restart
    assert f"?token={token.strip()}" in (tmp_path / "serve.log").read_text()  # the URL to open was printed
    assert client.get("/api/studies/e2e").json() == study
    assert client.get("/api/studies/e2e/verdict").json() == verdict
    assert client.get("/api/studies/e2e/trials").json() == trials
    assert client.get("/api/studies/e2e/trials/1").json() == trial
    assert client.get("/api/studies/e2e/history").json()["items"] == history
    assert client.get("/api/health").json()["workers_alive"] == 0
    server.stop()

    loaded = optuna.load_study(study_name="e2e", storage=server.url)
    assert [t.number for t in loaded.trials] == [0, 1, 2]
    assert loaded.trials[0].user_attrs["baseline"] is True
    assert {t.state.name.lower() for t in loaded.trials} <= {"complete", "pruned"}


def test_workers_end_when_serve_is_killed(server: Server, tmp_path: Path) -> None:
    client = server.start(workers=2)
    health = client.get("/api/health").json()
    assert (health["local_workers_expected"], health["local_workers_alive"]) == (2, 2)
    assert server.process is not None
    workers = _children(server.process.pid)
    assert len(workers) == 2
    server.process.kill()  # SIGKILL to serve alone: it cannot stop its workers itself
    server.process.wait()
    wait_for(lambda: all(pid not in _processes_using(tmp_path) for pid in workers), 60, "the workers to end")
    assert _processes_using(tmp_path) == []


def _completed(client: httpx.Client) -> dict[str, Any] | None:
    study: dict[str, Any] = client.get("/api/studies/e2e").json()
    return study if study["status"] == "completed" else None


def _confirmed(client: httpx.Client) -> dict[str, Any] | None:
    verdict: dict[str, Any] = client.get("/api/studies/e2e/verdict").json()
    return verdict if verdict["status"] == "complete" else None


def test_serve_refuses_an_outdated_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    storage.upgrade(url, "0001")
    result = subprocess.run(
        [sys.executable, "-m", "mtl_tune_cli.main", "serve", "--storage", url, "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "MTL_TUNE_TOKEN_FILE": str(tmp_path / "api-token")},
    )  # fmt: skip
    assert result.returncode != 0
    assert "mtl-tune db upgrade" in result.stderr
    assert not (tmp_path / "api-token").exists()  # a server that did not start made no token
