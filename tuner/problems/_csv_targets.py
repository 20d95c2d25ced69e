"""The csv problem's target columns: the ``COLUMN:KIND[:METRIC]`` spec, and each column as a task and its labels.

A missing target cell leaves its row to the other tasks: the task's target is ``Masked`` and skips that row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tuner.problems._csv_table import PREFIX, Rows, Table, check_finite, mean_std, missing_cells, parse_numbers
from tuner.problems._task import Masked, ProblemError, Task

#: Each kind's metrics, its default first.
METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("rmse", "mae", "mse"),
    "classification": ("accuracy", "balanced_accuracy", "f1", "auc"),
    "binary": ("auc", "balanced_accuracy", "accuracy", "f1"),
}
KINDS = tuple(METRICS)
#: A binary target's positive class, when one of its two values is spelled so.
POSITIVE = frozenset({"1", "true", "yes", "y", "t", "positive", "pos"})


@dataclass(frozen=True)
class TargetSpec:
    column: str
    kind: str
    metric: str


@dataclass(frozen=True)
class Target:
    """A target column as a task: one value per data row, and the rows that have one (``None``: every row)."""

    task: Task
    values: torch.Tensor
    mask: torch.Tensor | None
    notes: tuple[str, ...] = ()

    def take(self, rows: np.ndarray) -> torch.Tensor | Masked:
        index = torch.from_numpy(rows)
        if self.mask is None:
            return self.values[index]
        return Masked(self.values[index], self.mask[index])


def parse_target(spec: str) -> TargetSpec:
    """``COLUMN:KIND`` or ``COLUMN:KIND:METRIC``; the column's name may itself hold a colon."""
    head, sep, last = spec.rpartition(":")
    if not sep or not head:
        raise ProblemError(f"{PREFIX}: target {spec!r}: expected COLUMN:KIND with KIND one of {', '.join(KINDS)}")
    if last in METRICS:
        return TargetSpec(head, last, METRICS[last][0])
    column, sep, kind = head.rpartition(":")
    if not (sep and column and kind in METRICS):
        raise ProblemError(f"{PREFIX}: target {head!r}: unknown kind {last!r}; expected one of {', '.join(KINDS)}")
    if last not in METRICS[kind]:
        raise ProblemError(
            f"{PREFIX}: target {column!r}: metric {last!r} does not suit a {kind} target; "
            f"expected one of {', '.join(METRICS[kind])}"
        )
    return TargetSpec(column, kind, last)


def encode_target(table: Table, spec: TargetSpec, rows: Rows) -> Target:
    cells = table.require(spec.column, "target")
    missing = missing_cells(cells)
    for split, index in (("training", rows.train), ("validation", rows.val)):
        if missing[index].all():
            raise ProblemError(
                f"{PREFIX}: target column {spec.column!r} in {table.path} has no value in any of the "
                f"{len(index)} {split} rows"
            )
    if spec.kind == "regression":
        task, values, notes = _regression(table, spec, cells, missing, rows)
    else:
        task, values, notes = _labels(table, spec, cells, missing)
    if rows.test.size and missing[rows.test].all():
        notes = (*notes, f"column {spec.column!r}: no test row has a value; its test metric is undefined")
    n_missing = int(missing.sum())
    if not n_missing:
        return Target(task, values, None, notes)
    note = f"column {spec.column!r}: {n_missing} rows have no target value; only the other tasks use them"
    return Target(task, values, torch.from_numpy(~missing), (*notes, note))


def _regression(
    table: Table, spec: TargetSpec, cells: list[str], missing: np.ndarray, rows: Rows
) -> tuple[Task, torch.Tensor, tuple[str, ...]]:
    values, bad = parse_numbers(cells, missing)
    if bad is not None:
        raise ProblemError(
            f"{PREFIX}: regression target column {spec.column!r} in {table.path} is not numeric "
            f"(data row {bad[0]}: {bad[1]!r}); declare it as classification or binary instead"
        )
    check_finite(table, spec.column, "regression target", values)
    # Standardised for training with the training rows' statistics; the metric is reported in the column's units.
    mean, std = mean_std(values[rows.train][~missing[rows.train]])
    scaled = np.where(missing, 0.0, (values - mean) / std)
    task = Task(spec.column, "regression", metric=spec.metric, metric_scale=std)
    return task, torch.as_tensor(scaled, dtype=torch.float32)[:, None], ()


def _labels(
    table: Table, spec: TargetSpec, cells: list[str], missing: np.ndarray
) -> tuple[Task, torch.Tensor, tuple[str, ...]]:
    classes = sorted({cell for cell, gone in zip(cells, missing, strict=True) if not gone})
    where = f"{spec.kind} target column {spec.column!r} in {table.path}"
    if len(classes) < 2:
        raise ProblemError(f"{PREFIX}: {where} has a single class ({classes[0]!r}); it needs at least two")
    if spec.kind == "binary":
        if len(classes) != 2:
            shown = ", ".join(repr(c) for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise ProblemError(
                f"{PREFIX}: {where} has {len(classes)} distinct values ({shown}); a binary target has exactly two "
                "(declare it as classification instead)"
            )
        positive = positive_class(classes[0], classes[1])
        flags = torch.tensor([cell == positive for cell in cells], dtype=torch.float32)[:, None]
        note = f"column {spec.column!r}: binary target, positive class {positive!r}"
        return Task(spec.column, "binary", metric=spec.metric), flags, (note,)
    index = {c: i for i, c in enumerate(classes)}
    # A missing label takes class 0's index; the mask keeps it out of the loss and the metric.
    labels = torch.tensor([index.get(cell, 0) for cell in cells], dtype=torch.long)
    task = Task(spec.column, "classification", out_dim=len(classes), metric=spec.metric)
    shown = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
    return task, labels, (f"column {spec.column!r}: {len(classes)} classes ({shown})",)


def positive_class(first: str, second: str) -> str:
    """The value spelled 1/true/yes/y/t/positive/pos (case-insensitive); else the larger number; else the later one
    in sorted order."""
    named = [v for v in (first, second) if v.lower() in POSITIVE]
    if len(named) == 1:
        return named[0]
    try:
        return first if float(first) > float(second) else second
    except ValueError:
        return max(first, second)
