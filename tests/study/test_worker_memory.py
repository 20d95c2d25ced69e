"""A worker serving study after study keeps its memory bounded: one real ``mtl-tune worker`` process, 20 studies.

The worker's resident set size is read from ``/proc`` after each study completes. A worker that kept every study's
problem (its data tensors) for its lifetime grew by about one problem's data per study.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import storage
from tuner.study import StudySpec, create_study

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")]

MTL = [sys.executable, "-m", "mtl_tune_cli.main"]
STUDIES = 20
QUICK_SPACE = {"strategy": ["equal", "static", "uncertainty", "dwa"]}
MiB = 1024 * 1024
#: The bound: the largest RSS over the last three studies is at most the largest over the first three plus 100 MiB.
#: Each window holds one study of each of the three problem kinds below (they rotate), so both see the same peak
#: (the largest problem loaded, its model and optimizer). 100 MiB leaves room for allocator slack and for about
#: three of the largest problems' data (10-task gradnorm-toy, ~30 MiB each); a worker that keeps every study's
#: problem adds about 17 of them (> 250 MiB) by the last window.
BOUND = 100 * MiB


def _study(index: int) -> dict[str, Any]:
    """Study ``index``: the three problem kinds in turn, each with other options every time."""
    seed = {"seed": index}
    kind = index % 3
    if kind == 0:  # the largest: 10 tasks of 100 outputs each on 250 inputs
        options = {"tasks": 10, "n_train": 3000 + 50 * index, "n_val": 500, "n_test": 500, **seed}
        return {"problem": "gradnorm-toy", "problem_options": options}
    if kind == 1:
        return {"problem": "multi-digits", "problem_options": {"n_train": 500 + 10 * index, "n_val": 200, **seed}}
    return {"problem": "uncertainty-toy", "problem_options": {"n_train": 400 + 10 * index, "n_val": 100, **seed}}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _wait_done(url: str, name: str, worker: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with storage.session_scope(url) as session:
            job = storage.find_job(session, name)
            assert job is not None
            status = job.status
        if status not in storage.ACTIVE_STATUSES:
            return status
        assert worker.poll() is None, f"the worker exited ({worker.returncode}): {log.read_text()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"study {name} did not finish: {log.read_text()[-3000:]}")


def test_a_worker_serving_many_studies_keeps_its_memory_bounded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage.ensure_schema(url)
    log = tmp_path / "worker.log"
    env = {**os.environ, "MTL_TUNE_TOKEN_FILE": str(tmp_path / "token")}
    cmd = [*MTL, "worker", "--storage", url, "--device", "cpu", "--poll", "0.1", "--threads", "1"]
    with log.open("wb") as out:
        worker = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    rss: list[int] = []
    try:
        for index in range(STUDIES):
            fields = {"name": f"s{index}", "n_trials": 2, "epochs": 1, "pruner": "none", "space": QUICK_SPACE}
            spec = StudySpec.model_validate({**fields, **_study(index)})
            name = create_study(url, spec, source="cli").study_name
            assert _wait_done(url, name, worker, log) == "completed", log.read_text()[-3000:]
            rss.append(_rss(worker.pid))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        storage.dispose_engines()
    series = ", ".join(f"{r / MiB:.0f}" for r in rss)
    assert max(rss[-3:]) <= max(rss[:3]) + BOUND, f"worker RSS after each study (MiB): {series}"
