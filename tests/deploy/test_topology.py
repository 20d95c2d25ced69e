"""The compose topology as local processes: migrate, `serve --workers 0`, two workers, a study launched over REST."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.pg import fresh_database

MTL = [sys.executable, "-m", "mtl_tune_cli.main"]
TOKEN = "compose-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("mtl_tune_compose") as url:
        yield url


@pytest.mark.slow
def test_compose_topology_runs_a_rest_study_to_completion(pg_url: str) -> None:
    env = {**os.environ, "MTL_TUNE_STORAGE": pg_url, "MTL_TUNE_API_TOKEN": TOKEN}
    subprocess.run([*MTL, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    api = subprocess.Popen(
        [*MTL, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers = [
        subprocess.Popen(
            [*MTL, "worker", "--device", "cpu", "--poll", "0.5", "--threads", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(timeout=60)  # the first launch imports torch to validate the problem
    try:
        _wait_healthy(base, api)
        body = {
            "name": "compose",
            "problem": "uncertainty-toy",
            "problem_options": {"n_train": 200, "n_val": 100},
            "n_trials": 4,
            "epochs": 2,
            "sampler": "random",
        }
        assert http.post(f"{base}/api/studies", json=body).status_code == 401
        created = http.post(f"{base}/api/studies", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201, created.text
        deadline = time.time() + 240
        while time.time() < deadline:
            study = http.get(f"{base}/api/studies/compose").json()
            if study["status"] in ("completed", "failed"):
                break
            time.sleep(1)
        assert study["status"] == "completed", study
        assert study["trials"]["complete"] + study["trials"]["pruned"] == 4
        health = http.get(f"{base}/api/health").json()
        assert health["storage"] is True
        trials = http.get(f"{base}/api/studies/compose/trials").json()
        assert trials["total"] >= 4
    finally:
        for p in [api, *workers]:
            p.terminate()
        for p in [api, *workers]:
            p.wait(timeout=60)


def _wait_healthy(base: str, api: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if api.poll() is not None:
            raise AssertionError(api.stderr.read().decode() if api.stderr else "serve exited")
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("the API did not become healthy")
