"""The Pareto set of a multi-objective study, computed with numpy from the summaries' values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def pareto_numbers(rows: Iterable[tuple[int, Any]], directions: Sequence[str]) -> list[int]:
    """Trial numbers of the non-dominated ``(number, values)`` rows; rows without finite values are skipped.

    As Optuna's ``best_trials``: a trial is dominated when another is at least as good in every objective and better
    in one, so trials with equal values are all kept.
    """
    numbers, points = [], []
    for number, values in rows:
        if isinstance(values, list) and len(values) == len(directions) and all(_finite(v) for v in values):
            numbers.append(number)
            points.append(values)
    if not points:
        return []
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    mask = front_mask(np.asarray(points, dtype=float) * signs)
    return sorted(int(n) for n, keep in zip(numbers, mask, strict=True) if keep)


@dataclass(frozen=True)
class Front:
    """A study's Pareto set as of ``complete`` complete trials, the newest of which has summary id ``last_id``."""

    complete: int
    last_id: int
    members: tuple[tuple[int, Any], ...]  # (trial number, values)

    @property
    def numbers(self) -> list[int]:
        return [number for number, _ in self.members]


def extend(front: Front | None, rows: Sequence[tuple[int, int, Any]], directions: Sequence[str]) -> Front:
    """The front after adding complete trials ``(summary id, number, values)``: front(S + N) = front(front(S) + N)."""
    old = front.members if front is not None else ()
    candidates = [*old, *((number, values) for _, number, values in rows)]
    keep = set(pareto_numbers(candidates, directions))
    members = tuple((n, v) for n, v in candidates if n in keep)
    last_id = max([front.last_id if front is not None else 0, *(id_ for id_, _, _ in rows)])
    return Front(complete=(front.complete if front is not None else 0) + len(rows), last_id=last_id, members=members)


def front_mask(costs: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``costs`` (all objectives minimised).

    Visits points best-sum first, so the early ones remove most of the rest: O(n * front size).
    """
    order = np.argsort(costs.sum(axis=1), kind="stable")
    remaining = order
    i = 0
    while i < len(remaining):
        current = costs[remaining[i]]
        candidates = costs[remaining]
        dominated = np.all(candidates >= current, axis=1) & np.any(candidates > current, axis=1)
        remaining = remaining[~dominated]
        i = int(np.count_nonzero(~dominated[:i])) + 1
    mask = np.zeros(len(costs), dtype=bool)
    mask[remaining] = True
    return mask


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
