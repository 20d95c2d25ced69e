"""The worker pool of ``mtl-tune serve``: commands, round-robin devices, restarts, shutdown."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from api import workers
from api.workers import WorkerPool


class ShortLived(WorkerPool):
    """Workers that exit after a moment, like a crashing ``mtl-tune worker``."""

    def command(self, slot: workers._Slot) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(0.3)"]


class Sleeper(WorkerPool):
    def command(self, slot: workers._Slot) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_commands_run_mtl_tune_worker_with_devices_round_robin() -> None:
    pool = WorkerPool("sqlite:///x.db", count=3, devices=["cuda:0", "cuda:1"], threads=2)
    commands = [pool.command(slot) for slot in pool.slots]
    assert commands[0][:6] == [sys.executable, "-m", "mtl_tune_cli.main", "worker", "--storage", "sqlite:///x.db"]
    assert [c[c.index("--device") + 1] for c in commands] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [c[c.index("--worker-index") + 1] for c in commands] == ["0", "1", "2"]
    assert all(c[c.index("--threads") + 1] == "2" for c in commands)
    assert "--device" not in WorkerPool("sqlite:///x.db", count=1).command(WorkerPool("u", count=1).slots[0])


def test_workers_inherit_the_plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `mtl-tune --plugin MODULE serve` adds MODULE to MTL_TUNE_PLUGINS; its workers must import the same problems.
    monkeypatch.setenv("MTL_TUNE_PLUGINS", "my_pkg.problems")
    seen = tmp_path / "seen"

    class Reporter(WorkerPool):
        def command(self, slot: workers._Slot) -> list[str]:
            code = f"import os, pathlib; pathlib.Path({str(seen)!r}).write_text(os.environ['MTL_TUNE_PLUGINS'])"
            return [sys.executable, "-c", code]

    pool = Reporter("sqlite:///x.db", count=1)
    pool.start()
    deadline = time.monotonic() + 10
    while not (seen.exists() and seen.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.stop()
    assert seen.read_text() == "my_pkg.problems"


def test_a_dead_worker_is_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "CHECK_SECONDS", 0.05)
    pool = ShortLived("sqlite:///x.db", count=1)
    pool.start()
    first = pool.slots[0].process
    assert first is not None
    deadline = time.monotonic() + 10
    while pool.slots[0].process in (None, first) and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.stop()
    assert pool.slots[0].process not in (None, first)  # a new process replaced the one that exited


def test_stop_terminates_every_worker() -> None:
    pool = Sleeper("sqlite:///x.db", count=2)
    pool.start()
    assert len(pool.alive()) == 2
    pool.stop(timeout=10)
    assert pool.alive() == []
    assert all(s.process is not None and s.process.returncode is not None for s in pool.slots)
    pool.start()  # a stopped pool stays stopped
    assert pool.alive() == []


def test_an_empty_pool_does_nothing() -> None:
    pool = WorkerPool("sqlite:///x.db", count=0)
    pool.start()
    assert pool.alive() == []
    pool.stop()
