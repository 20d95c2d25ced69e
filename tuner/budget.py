"""A training run's time and memory budget (the operator's ``MTL_TUNE_MAX_TRIAL_SECONDS`` and
``MTL_TUNE_MAX_TRIAL_MEMORY_MB``), checked by the loop at batch and epoch boundaries from the host's own clock and
the process's resident memory: no tensor is read for it."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass

from tuner.limits import Limits, variable

#: Resident memory is read at most this often (seconds); the clock at every check.
MEMORY_EVERY = 0.25


class BudgetExceeded(RuntimeError):
    """A run went over its time or memory budget; training stops and a study records this as the trial's reason."""


@dataclass(frozen=True)
class Budget:
    """Seconds and MiB of resident memory a run may use; 0: no budget."""

    seconds: float = 0.0
    memory_mb: float = 0.0

    @classmethod
    def from_env(cls) -> Budget:
        limits = Limits.from_env()
        return cls(seconds=limits.trial_seconds, memory_mb=limits.trial_memory_mb)


class BudgetWatch:
    """Started with the run; ``check(where)`` raises ``BudgetExceeded`` once the run is over its budget."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.started = time.monotonic()
        self._memory_at = 0.0

    def check(self, where: str, *args: object) -> None:
        """``where % args`` says where in the run the check was made; it is formatted only when the budget is
        exceeded, so a check at every batch costs a clock read."""
        budget = self.budget
        if not (budget.seconds or budget.memory_mb):
            return
        now = time.monotonic()
        elapsed = now - self.started
        if budget.seconds and elapsed > budget.seconds:
            raise BudgetExceeded(
                f"the run exceeded its time budget of {budget.seconds:g} s ({variable('trial_seconds')}): "
                f"{elapsed:.0f} s {where % args}"
            )
        if budget.memory_mb and now - self._memory_at >= MEMORY_EVERY:
            self._memory_at = now
            used = resident_mb()
            if used > budget.memory_mb:
                raise BudgetExceeded(
                    f"the run exceeded its memory budget of {budget.memory_mb:g} MiB "
                    f"({variable('trial_memory_mb')}): the process holds {used:.0f} MiB {where % args}"
                )


def resident_mb() -> float:
    """The process's resident memory now (Linux), or its peak where the system tells no other (macOS)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
