"""Local worker processes supervised by ``mtl-tune serve``: started, restarted when they die, stopped at shutdown.

Training never runs in the API process; these are ordinary ``mtl-tune worker`` processes, the same as workers
started by hand on other machines.
"""

from __future__ import annotations

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
MAX_BACKOFF_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 30.0  # a worker that ran this long before dying is restarted at once


@dataclass
class _Slot:
    index: int
    device: str | None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0


class WorkerPool:
    """``count`` worker processes; devices are assigned round-robin (``cuda:0,cuda:1`` -> 0, 1, 0, ...)."""

    def __init__(self, url: str, *, count: int, devices: Sequence[str] = (), threads: int | None = None) -> None:
        self.url = url
        self.slots = [_Slot(i, devices[i % len(devices)] if devices else None) for i in range(count)]
        self.threads = threads or max(1, (os.cpu_count() or 1) // max(count, 1))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="mtl-tune-worker-pool", daemon=True)

    def command(self, slot: _Slot) -> list[str]:
        cmd = [sys.executable, "-m", "mtl_tune_cli.main", "worker", "--storage", self.url,
               "--worker-index", str(slot.index), "--threads", str(self.threads)]  # fmt: skip
        return cmd + (["--device", slot.device] if slot.device else [])

    def start(self) -> None:
        with self._lock:
            if self._thread.is_alive() or self._stop.is_set():
                return
            for slot in self.slots:
                self._spawn(slot)
        if self.slots:
            self._thread.start()

    def alive(self) -> list[str]:
        """Names of the live workers as they appear in trial claims (``host:pid``)."""
        host = socket.gethostname()
        with self._lock:
            return [f"{host}:{s.process.pid}" for s in self.slots if s.process and s.process.poll() is None]

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM every worker (its running trial is marked failed and retried later), then SIGKILL stragglers.

        Idempotent; a stopped pool does not start again.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            live = [s.process for s in self.slots if s.process and s.process.poll() is None]
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

    def _spawn(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(self.command(slot), stdin=subprocess.DEVNULL)
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d, device %s)", slot.index, slot.process.pid, slot.device or "auto")

    def _supervise(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            with self._lock:
                for slot in self.slots:
                    self._check(slot)

    def _check(self, slot: _Slot) -> None:
        now = time.monotonic()
        process = slot.process
        if process is not None and process.poll() is None:
            return
        if process is not None:  # died since the last look: schedule a restart, sooner if it had run a while
            ran = now - slot.started
            slot.backoff = 0.0 if ran > HEALTHY_AFTER_SECONDS else min(MAX_BACKOFF_SECONDS, max(1.0, 2 * slot.backoff))
            slot.restart_at = now + slot.backoff
            log.warning("worker %d (pid %d) exited with code %s; restarting in %.0f s", slot.index, process.pid,
                        process.returncode, slot.backoff)  # fmt: skip
            slot.process = None
        if now >= slot.restart_at:
            self._spawn(slot)
