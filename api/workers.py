"""Local worker processes supervised by ``mtl-tune serve``: started, restarted when they die, stopped at shutdown.

Training never runs in the API process; these are ordinary ``mtl-tune worker`` processes, the same as workers
started by hand on other machines, except that they end with the process that started them (``follow_parent``).
The storage URL reaches them through the environment, never their command line (``ps`` would show its password).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("mtl_tune.serve")

CHECK_SECONDS = 1.0
MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 30.0  # a worker that ran this long before dying is restarted at once
#: Set in a supervised worker's environment: the pid of the process it must not outlive.
PARENT_PID_ENV = "MTL_TUNE_PARENT_PID"
STORAGE_ENV = "MTL_TUNE_STORAGE"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass
class _Slot:
    index: int
    device: str | None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0


class WorkerPool:
    """``count`` worker processes; devices are assigned round-robin (``cuda:0,cuda:1`` -> 0, 1, 0, ...).

    One thread starts, watches, restarts and stops them all: a worker's parent-death signal fires when the thread
    that started it ends, so that thread lives as long as the pool does.
    """

    def __init__(self, url: str, *, count: int, devices: Sequence[str] = (), threads: int | None = None) -> None:
        self.url = url
        self.slots = [_Slot(i, devices[i % len(devices)] if devices else None) for i in range(count)]
        self.threads = threads or max(1, (os.cpu_count() or 1) // max(count, 1))
        self._stop = threading.Event()
        self._started = threading.Event()
        self._stop_timeout = STOP_TIMEOUT_SECONDS
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="mtl-tune-worker-pool", daemon=True)

    @property
    def expected(self) -> int:
        """How many workers the pool keeps running."""
        return len(self.slots)

    def command(self, slot: _Slot) -> list[str]:
        cmd = [sys.executable, "-m", "mtl_tune_cli.main", "worker",
               "--worker-index", str(slot.index), "--threads", str(self.threads)]  # fmt: skip
        return cmd + (["--device", slot.device] if slot.device else [])

    def environment(self) -> dict[str, str]:
        return worker_environment(self.url)

    def start(self) -> None:
        """Start the workers; returns once each has been started (or has failed to start and awaits a retry)."""
        with self._lock:
            if self._thread.is_alive() or self._stop.is_set() or not self.slots:
                return
            self._thread.start()
        self._started.wait()

    def alive(self) -> list[str]:
        """Names of the live workers as they appear in trial claims (``host:pid``)."""
        host = socket.gethostname()
        with self._lock:
            return [f"{host}:{s.process.pid}" for s in self.slots if s.process and s.process.poll() is None]

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM every worker (its running trial is marked interrupted and retried later), then SIGKILL stragglers.

        Idempotent; a stopped pool does not start again.
        """
        with self._lock:
            self._stop_timeout = timeout
            self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _supervise(self) -> None:
        try:
            while True:
                with self._lock:
                    for slot in self.slots:
                        self._check(slot)
                self._started.set()
                if self._stop.wait(CHECK_SECONDS):
                    break
        finally:
            self._started.set()
            self._terminate()

    def _check(self, slot: _Slot) -> None:
        now = time.monotonic()
        process = slot.process
        if process is not None and process.poll() is None:
            return
        if process is not None:  # died since the last look: schedule a restart, sooner if it had run a while
            healthy = now - slot.started > HEALTHY_AFTER_SECONDS
            self._retry_later(slot, now, reset=healthy)
            log.warning("worker %d (pid %d) exited with code %s; restarting in %.0f s", slot.index, process.pid,
                        process.returncode, slot.backoff)  # fmt: skip
            slot.process = None
        if now < slot.restart_at or self._stop.is_set():
            return
        try:
            slot.process = subprocess.Popen(self.command(slot), stdin=subprocess.DEVNULL, env=self.environment())
        except Exception as exc:  # no memory, no pids, a broken interpreter: keep trying, the pool never gives up
            self._retry_later(slot, now, reset=False)
            log.error("worker %d could not be started (%s); retrying in %.0f s", slot.index, exc, slot.backoff)
            return
        slot.started = now
        log.info("worker %d started (pid %d, device %s)", slot.index, slot.process.pid, slot.device or "auto")

    @staticmethod
    def _retry_later(slot: _Slot, now: float, *, reset: bool) -> None:
        slot.backoff = 0.0 if reset else min(MAX_BACKOFF_SECONDS, max(MIN_BACKOFF_SECONDS, 2 * slot.backoff))
        slot.restart_at = now + slot.backoff

    def _terminate(self) -> None:
        with self._lock:
            live = [s.process for s in self.slots if s.process and s.process.poll() is None]
            timeout = self._stop_timeout
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in live:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop within %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.wait()


def worker_environment(url: str) -> dict[str, str]:
    """The environment of a worker process this process starts: its own, plus the storage URL (not on the command
    line, where ``ps`` would show a password) and this process's pid, which the worker must not outlive."""
    return {**os.environ, STORAGE_ENV: url, PARENT_PID_ENV: str(os.getpid())}


def follow_parent() -> None:
    """In a worker a pool started (``PARENT_PID_ENV`` set): end like SIGTERM does when that parent ends, even by
    ``kill -9``. Linux arms the kernel's parent-death signal; elsewhere a thread watches the parent pid. A worker
    started by hand has no such variable and is left alone."""
    value = os.environ.pop(PARENT_PID_ENV, "")
    if not value.isdigit():
        return
    parent = int(value)
    if not _arm_parent_death_signal():
        threading.Thread(target=_watch_parent, args=(parent,), name="mtl-tune-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _arm_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
