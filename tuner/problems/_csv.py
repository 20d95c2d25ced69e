"""The user's own table: feature columns and one or more target columns."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from tuner.config import Chain
from tuner.problems._base import Defaults, Knob, Problem, ProblemOptions
from tuner.problems._data import Dataset, Split
from tuner.problems._sharing import SharedBottom, mlp
from tuner.problems._task import ProblemError, Task

KINDS = ("regression", "classification")
PREFIX = "problem 'csv'"


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
    the column's own units; class labels may be any strings or numbers. Standardisation uses the training rows'
    statistics only, so the validation rows stay unseen."""

    name: ClassVar[str] = "csv"
    description: ClassVar[str] = "your own CSV table: --data FILE --target COLUMN:regression|classification"
    Options = CsvOptions
    model_knobs: ClassVar[Mapping[str, Knob]] = {
        "hidden": Knob(64, help="width of the shared ReLU layers"),
        "depth": Knob(2, help="number of shared layers"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        assert isinstance(self.options, CsvOptions)
        self._targets = [_parse_target(spec) for spec in self.options.target]
        if not self._targets:
            raise ProblemError(f"{PREFIX}: at least one --target COLUMN:KIND is required")
        names = [name for name, _ in self._targets]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ProblemError(f"{PREFIX}: target column {duplicated[0]!r} is given more than once")
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

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        self.load()
        return SharedBottom(self.tasks, mlp(self._in_dim, knobs["hidden"], knobs["depth"]), knobs["hidden"], chain)

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=3e-3, lr_heads=3e-3, lr_weighting=1e-2, batch_size=64, epochs=30)

    def _read(self) -> Dataset:
        assert isinstance(self.options, CsvOptions)
        path = self.options.data
        header, rows = _read_table(path)
        names = [name for name, _ in self._targets]
        for col in [*names, *(self.options.features or [])]:
            if col not in header:
                raise ProblemError(f"{PREFIX}: column {col!r} not found in {path}; columns: {', '.join(header)}")
        features = self.options.features or [c for c in header if c not in names]
        if not features:
            raise ProblemError(f"{PREFIX}: {path} has no feature columns left after removing the targets")
        n_val = max(1, round(len(rows) * self.options.val_fraction))
        if len(rows) - n_val < 1:
            raise ProblemError(f"{PREFIX}: {path} has {len(rows)} rows, too few for a train/validation split")
        columns = {c: [row[header.index(c)] for row in rows] for c in header}
        # Shuffle once (after parsing, so errors name the file's own row numbers); the first n_val rows validate.
        order = np.random.default_rng(self.options.seed).permutation(len(rows))
        x = np.stack([_numeric(path, c, columns[c], "feature") for c in features], axis=1)[order]
        tasks, ys = [], {}
        for name, kind in self._targets:
            task, y = _target(path, name, kind, columns[name], order, n_val)
            tasks.append(task)
            ys[name] = y
        self._tasks, self._in_dim = tasks, len(features)
        xt = torch.as_tensor(_standardise(x, n_val)[0], dtype=torch.float32)
        return Dataset(
            train=Split(xt[n_val:], {k: v[n_val:] for k, v in ys.items()}),
            val=Split(xt[:n_val], {k: v[:n_val] for k, v in ys.items()}),
        )


def _parse_target(spec: str) -> tuple[str, str]:
    name, sep, kind = spec.rpartition(":")
    if not sep or not name:
        raise ProblemError(f"{PREFIX}: target {spec!r}: expected COLUMN:KIND with KIND one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ProblemError(f"{PREFIX}: target {name!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return name, kind


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise ProblemError(f"{PREFIX}: data file {str(path)!r} not found")
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ProblemError(f"{PREFIX}: {path} is not a readable CSV file ({exc})") from None
    if not header or not rows:
        raise ProblemError(f"{PREFIX}: {path} is empty (it needs a header row and at least one data row)")
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ProblemError(f"{PREFIX}: {path} line {i} has {len(row)} fields, the header has {len(header)}")
    return header, rows


def _numeric(path: Path, column: str, cells: list[str], role: str) -> np.ndarray:
    values = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        try:
            values[i] = float(cell)
        except ValueError:
            hint = (
                "features must be numbers; declare it as a classification target or drop it"
                if role == "feature"
                else "a regression target must be numeric; declare it as classification instead"
            )
            raise ProblemError(
                f"{PREFIX}: {role} column {column!r} in {path} is not numeric (data row {i + 1}: {cell!r}); {hint}"
            ) from None
        if not math.isfinite(values[i]):
            raise ProblemError(
                f"{PREFIX}: {role} column {column!r} in {path} has a missing or infinite value (data row {i + 1})"
            )
    return values


def _standardise(values: np.ndarray, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale with the training rows' (``values[n_val:]``) mean and std; returns the scaled values and the std."""
    train = values[n_val:]
    std = np.where(train.std(axis=0) > 0, train.std(axis=0), 1.0)
    return (values - train.mean(axis=0)) / std, std


def _target(
    path: Path, name: str, kind: str, cells: list[str], order: np.ndarray, n_val: int
) -> tuple[Task, torch.Tensor]:
    if kind == "classification":
        classes = sorted(set(cells))
        if len(classes) < 2:
            raise ProblemError(
                f"{PREFIX}: classification target column {name!r} in {path} has a single class ({classes[0]!r}); "
                "it needs at least two"
            )
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[c] for c in cells], dtype=torch.long)[torch.from_numpy(order)]
        return Task(name, "classification", out_dim=len(classes)), labels
    scaled, std = _standardise(_numeric(path, name, cells, "regression target")[order], n_val)
    return Task(name, "regression", metric_scale=float(std)), torch.as_tensor(scaled, dtype=torch.float32)[:, None]
