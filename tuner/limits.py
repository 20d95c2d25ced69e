"""The operator's limits on what one study may ask for, and on what one training run may spend.

One definition for the CLI and the REST API: each limit is read from its environment variable (``MTL_TUNE_MAX_*``)
when a study is launched, and a request over one is refused naming the field and the variable that raises it.
Problems declare which of their options and model knobs size memory or time: an option field with
``json_schema_extra={"limit": KIND}``, a ``Knob(limit=KIND)``, where KIND is a field of ``Limits``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

PREFIX = "MTL_TUNE_MAX_"


class LimitError(ValueError):
    """A request over one of the operator's limits; ``loc`` is the offending field's path."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(f"{'.'.join(loc)}: {message}")
        self.loc = loc


@dataclass(frozen=True)
class Limits:
    """The maxima, each set by ``MTL_TUNE_MAX_<FIELD>`` (e.g. ``MTL_TUNE_MAX_SAMPLES=500000``); 0 removes the
    time and memory budgets of a training run."""

    #: samples of one data split option (``n_train``, ``n_val``, ``n_test``) and rows of a csv file
    samples: int = 200_000
    #: columns of a csv file
    csv_columns: int = 5_000
    #: cells (rows times columns) of a csv file: what reading it at launch holds in memory
    csv_cells: int = 10_000_000
    #: a model's width knobs (``hidden``)
    width: int = 2_048
    #: a model's depth knobs (layers, blocks)
    depth: int = 16
    batch_size: int = 16_384
    epochs: int = 1_000
    #: a study's target of finished trials
    trials: int = 10_000
    #: seconds one training run (one trial) may take; 0: no budget
    trial_seconds: int = 0
    #: MiB of resident memory the process may hold while a run trains; 0: no budget
    trial_memory_mb: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The limits the environment sets, the defaults elsewhere; a value that is not a whole number >= 0 is
        refused naming its variable."""
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for f in fields(cls):
            raw = env.get(variable(f.name), "").strip()
            if not raw:
                continue
            try:
                values[f.name] = int(raw)
            except ValueError:
                values[f.name] = -1
            if values[f.name] < 0:
                raise ValueError(f"{variable(f.name)}: expected a whole number >= 0, got {raw!r}")
        return cls(**values)

    def check(self, loc: tuple[str, ...], kind: str, value: float, *, what: str | None = None) -> None:
        """Refuse ``value`` (at ``loc``; ``what`` says what it counts) when it exceeds the limit ``kind``."""
        limit = getattr(self, kind)
        if value > limit:
            counted = f"{what}: " if what else ""
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise LimitError(loc, f"{counted}{shown} exceeds the maximum of {limit} (set by {variable(kind)})")


def variable(kind: str) -> str:
    """The environment variable of limit ``kind``."""
    return PREFIX + kind.upper()


def kinds() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Limits))
