"""The user's own table: feature columns and one or more target columns."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator

from tuner.problems._base import (
    Dataset,
    Defaults,
    Problem,
    ProblemError,
    ProblemOptions,
    Split,
    Task,
    Trunk,
    mlp_trunk,
)

KINDS = ("regression", "classification")


class CsvOptions(ProblemOptions):
    data: Path = Field(description="path of the CSV file (header row, one sample per row)")
    target: list[str] = Field(description="target columns as NAME:regression or NAME:classification")
    features: list[str] | None = Field(None, description="feature columns; default: every non-target column")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    @field_validator("target", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class CsvProblem(Problem):
    """Features are standardised; regression targets are standardised for training and their RMSE is reported in
    the column's own units; class labels may be any strings or numbers."""

    name: ClassVar[str] = "csv"
    description: ClassVar[str] = "your own CSV table: --data FILE --target COLUMN:regression|classification"
    Options = CsvOptions

    def __post_init__(self) -> None:
        assert isinstance(self.options, CsvOptions)
        self._targets = [_parse_target(spec) for spec in self.options.target]
        if not self._targets:
            raise ProblemError("problem 'csv': at least one --target COLUMN:KIND is required")
        self._data: Dataset | None = None
        self._tasks: list[Task] | None = None
        self._in_dim = 0

    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            self.load()
        assert self._tasks is not None
        return self._tasks

    def load(self) -> Dataset:
        if self._data is None:
            self._data = self._read()
        return self._data

    def build_trunk(self, hidden: int, depth: int) -> Trunk:
        self.load()
        return mlp_trunk(self._in_dim, hidden, depth)

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=3e-3, lr_heads=3e-3, lr_weighting=1e-2, batch_size=64, epochs=30, hidden=64, depth=2)

    def _read(self) -> Dataset:
        assert isinstance(self.options, CsvOptions)
        header, rows = _read_table(self.options.data)
        names = [name for name, _ in self._targets]
        for col in [*names, *(self.options.features or [])]:
            if col not in header:
                raise ProblemError(f"{self.options.data}: column {col!r} not found; columns: {', '.join(header)}")
        features = self.options.features or [c for c in header if c not in names]
        if not features:
            raise ProblemError(f"{self.options.data}: no feature columns left after removing the targets")
        columns = {c: [row[header.index(c)] for row in rows] for c in header}
        x = np.stack([_numeric(self.options.data, c, columns[c]) for c in features], axis=1)
        x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        tasks, ys = [], {}
        for name, kind in self._targets:
            task, y = _target(self.options.data, name, kind, columns[name])
            tasks.append(task)
            ys[name] = y
        self._tasks, self._in_dim = tasks, len(features)
        rng = np.random.default_rng(self.options.seed)
        order = torch.from_numpy(rng.permutation(len(rows)))
        n_val = max(1, round(len(rows) * self.options.val_fraction))
        if len(rows) - n_val < 1:
            raise ProblemError(f"{self.options.data}: {len(rows)} rows are too few for a train/validation split")
        xt = torch.as_tensor(x, dtype=torch.float32)[order]
        yt = {k: v[order] for k, v in ys.items()}
        return Dataset(
            train=Split(xt[n_val:], {k: v[n_val:] for k, v in yt.items()}),
            val=Split(xt[:n_val], {k: v[:n_val] for k, v in yt.items()}),
        )


def _parse_target(spec: str) -> tuple[str, str]:
    name, sep, kind = spec.rpartition(":")
    if not sep or not name:
        raise ProblemError(f"target {spec!r}: expected COLUMN:KIND with KIND one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ProblemError(f"target {name!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return name, kind


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise ProblemError(f"data file {str(path)!r} not found")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not header or not rows:
        raise ProblemError(f"{path}: the table is empty (it needs a header row and at least one data row)")
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ProblemError(f"{path}: line {i} has {len(row)} fields, the header has {len(header)}")
    return header, rows


def _numeric(path: Path, column: str, cells: list[str]) -> np.ndarray:
    values = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        try:
            values[i] = float(cell)
        except ValueError:
            raise ProblemError(
                f"{path}: column {column!r} is not numeric (row {i + 1}: {cell!r}); "
                "features must be numbers; declare it as a classification target or drop it"
            ) from None
        if not math.isfinite(values[i]):
            raise ProblemError(f"{path}: column {column!r} has a missing or infinite value in row {i + 1}")
    return values


def _target(path: Path, name: str, kind: str, cells: list[str]) -> tuple[Task, torch.Tensor]:
    if kind == "classification":
        classes = sorted(set(cells))
        if len(classes) < 2:
            raise ProblemError(f"{path}: classification column {name!r} has a single class ({classes[0]!r})")
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[c] for c in cells], dtype=torch.long)
        return Task(name, "classification", out_dim=len(classes)), labels
    values = _numeric(path, name, cells)
    std = float(values.std()) or 1.0
    y = torch.as_tensor((values - values.mean()) / std, dtype=torch.float32)[:, None]
    return Task(name, "regression", metric_scale=std), y
