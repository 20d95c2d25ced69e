"""The worker pool of ``mtl-tune serve``: commands, round-robin devices, restarts, shutdown; workers that end with
the process that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api import workers
from api.workers import PARENT_PID_ENV, WorkerPool

SECRET_URL = "postgresql+psycopg://user:pa55word@db-host/studies"


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
    assert commands[0][:4] == [sys.executable, "-m", "mtl_tune_cli.main", "worker"]
    assert [c[c.index("--device") + 1] for c in commands] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [c[c.index("--worker-index") + 1] for c in commands] == ["0", "1", "2"]
    assert all(c[c.index("--threads") + 1] == "2" for c in commands)
    assert "--device" not in WorkerPool("sqlite:///x.db", count=1).command(WorkerPool("u", count=1).slots[0])


def test_the_storage_url_reaches_workers_through_the_environment_not_their_command_line() -> None:
    # `ps` shows every user the command line: a password in the URL must not be there.
    pool = WorkerPool(SECRET_URL, count=2)
    assert all("pa55word" not in " ".join(pool.command(slot)) for slot in pool.slots)
    env = pool.environment()
    assert env["MTL_TUNE_STORAGE"] == SECRET_URL and env[PARENT_PID_ENV] == str(os.getpid())


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


class FailsToSpawn(WorkerPool):
    """The first start works and exits at once; the next two starts fail (no such program); then they work."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls = 0

    def command(self, slot: workers._Slot) -> list[str]:
        self.calls += 1
        if self.calls in (2, 3):
            return ["/nonexistent/mtl-tune-worker"]
        return [sys.executable, "-c", f"import time; time.sleep({0.1 if self.calls == 1 else 60})"]


def test_a_worker_that_cannot_be_started_is_retried_with_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "CHECK_SECONDS", 0.02)
    monkeypatch.setattr(workers, "MIN_BACKOFF_SECONDS", 0.05)
    pool = FailsToSpawn("sqlite:///x.db", count=1)
    pool.start()
    deadline = time.monotonic() + 20
    while len(pool.alive()) == 0 or pool.calls < 4:
        assert time.monotonic() < deadline, f"no worker after {pool.calls} starts"
        time.sleep(0.02)
    assert pool.slots[0].backoff >= 0.1  # the failures doubled the wait
    pool.stop(timeout=10)
    assert pool.alive() == []


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for a parent that does not reap counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_supervised_worker_ends_with_its_parent_and_one_started_by_hand_does_not(tmp_path: Path) -> None:
    child = "from api.workers import follow_parent; follow_parent(); import time; time.sleep(120)"
    parent = f"""
import os, subprocess, sys, time
env = {{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}}
supervised = subprocess.Popen([sys.executable, "-c", {child!r}], env=env)
by_hand = subprocess.Popen([sys.executable, "-c", {child!r}])
print(supervised.pid, by_hand.pid, flush=True)
time.sleep(120)
"""
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    supervised, by_hand = map(int, process.stdout.readline().split())
    try:
        time.sleep(1.5)  # both children are up and the supervised one has armed its signal
        process.kill()  # SIGKILL: the parent has no chance to stop its children itself
        process.wait()
        deadline = time.monotonic() + 30
        while not _gone(supervised):
            assert time.monotonic() < deadline, "the supervised child outlived its parent"
            time.sleep(0.1)
        assert not _gone(by_hand)
    finally:
        for pid in (supervised, by_hand):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
