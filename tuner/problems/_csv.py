"""The user's own table: feature columns and one or more target columns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from tuner.config import Chain
from tuner.limits import Limits
from tuner.problems._base import Defaults, Knob, Problem, ProblemOptions
from tuner.problems._csv_columns import Encoded, encode_feature, over_cells
from tuner.problems._csv_table import MISSING, PREFIX, Rows, Table, read_table, split_rows
from tuner.problems._csv_targets import METRICS, Target, encode_target, parse_target
from tuner.problems._data import Dataset, Split
from tuner.problems._sharing import SharedBottom, mlp
from tuner.problems._task import ProblemError, Task

_LIMITS = Limits()  # the defaults, for the options' help
_METRIC_HELP = "; ".join(f"{kind}: {', '.join(metrics)}" for kind, metrics in METRICS.items())


class CsvOptions(ProblemOptions):
    data: Path = Field(
        description="path of the CSV file (header row, one sample per row); at most MTL_TUNE_MAX_SAMPLES rows, "
        "MTL_TUNE_MAX_CSV_COLUMNS columns and MTL_TUNE_MAX_CSV_CELLS cells "
        f"({_LIMITS.samples}, {_LIMITS.csv_columns} and {_LIMITS.csv_cells} unless the operator sets them)"
    )
    target: list[str] = Field(
        description="target columns as COLUMN:KIND[:METRIC], KIND one of regression, classification, binary; "
        f"METRIC (default first) {_METRIC_HELP}. A binary target's positive class is the value spelled "
        "1/true/yes/y/t/positive/pos, else the larger number, else the later one in sorted order"
    )
    features: list[str] | None = Field(None, description="feature columns; default: every non-target column")
    categorical: list[str] = Field(
        default_factory=list,
        description="feature columns to one-hot even if their cells are numbers (codes); a column with a "
        "non-numeric cell is categorical anyway",
    )
    max_categories: int = Field(
        20,
        ge=1,
        description="one-hot columns per categorical feature: its most frequent training values; the rest, and "
        "values no training row has, are 'other' (all zeros)",
    )
    chain: list[str] = Field(
        default_factory=list,
        description="task chains SOURCE:TARGET between target columns that training may use; a study searches "
        "the first one's mode (none, detach, through)",
    )
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of the rows held out for validation")
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="share of the rows held out for the final test (0: no test split)"
    )

    @field_validator("target", "features", "categorical", "chain", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _room_to_train(self) -> CsvOptions:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave rows to train on (sum below 1)")
        return self


class CsvProblem(Problem):
    """Rows are split (seeded) into train, validation and test; every statistic comes from the training rows.

    Numeric features are standardised; missing ones (empty, NA, N/A, nan, null, None, ?) are imputed with the
    training mean and get a 0/1 missing-indicator column. A declared or non-numeric feature is one-hot over its most
    frequent training values (missing cells are a category of their own). Regression targets are standardised for
    training and their metric is reported in the column's units. A missing target cell drops that row for that
    task only (its target is ``Masked``); an empty class label is missing, never a class. A binary target (BCE with
    logits; AUC by default) has exactly two values; the option ``target`` says which one is positive. The model's
    target heads may read another target's prediction along the pairs the option ``chain`` declares.
    ``notes`` says what was done to which column.
    """

    name: ClassVar[str] = "csv"
    description: ClassVar[str] = (
        "your own CSV table: --data FILE --target COLUMN:regression|classification|binary[:METRIC]; categorical and "
        "missing features are encoded (see the problem's notes); chains between targets with the option chain"
    )
    Options = CsvOptions
    model_knobs: ClassVar[Mapping[str, Knob]] = {
        "hidden": Knob(64, help="width of the shared ReLU layers", limit="width"),
        "depth": Knob(2, help="number of shared layers", limit="depth"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        opts = self.opts
        self._targets = [parse_target(spec) for spec in opts.target]
        if not self._targets:
            raise ProblemError(f"{PREFIX}: at least one --target COLUMN:KIND is required")
        seen: set[str] = set()
        for spec in self._targets:
            if spec.column in seen:
                raise ProblemError(f"{PREFIX}: target column {spec.column!r} is given more than once")
            seen.add(spec.column)
        self._chains = tuple(_parse_chain(spec, seen) for spec in opts.chain)
        self._data: Dataset | None = None
        self._tasks: list[Task] | None = None
        self._notes: list[str] = []
        self._in_dim = 0

    @property
    def opts(self) -> CsvOptions:
        assert isinstance(self.options, CsvOptions)
        return self.options

    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            self.load()
        assert self._tasks is not None
        return self._tasks

    @property
    def notes(self) -> list[str]:
        """What reading the table did, one line each: the splits, and each column that was encoded, imputed,
        dropped or masked."""
        self.load()
        return list(self._notes)

    @property
    def chains(self) -> tuple[tuple[str, str], ...]:
        return self._chains

    def load(self) -> Dataset:
        if self._data is None:
            self._data = self._read()
        return self._data

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        self.load()
        return SharedBottom(self.tasks, mlp(self._in_dim, knobs["hidden"], knobs["depth"]), knobs["hidden"], chain)

    @property
    def defaults(self) -> Defaults:
        chain = self._chains[0] if self._chains else None
        return Defaults(lr_shared=3e-3, lr_heads=3e-3, lr_weighting=1e-2, batch_size=64, epochs=30, chain=chain)

    def _read(self) -> Dataset:
        opts = self.opts
        table = read_table(opts.data)
        rows = split_rows(table, opts.val_fraction, opts.test_fraction, opts.seed)
        targets = [encode_target(table, spec, rows) for spec in self._targets]
        declared = set(opts.categorical)
        left = Limits.from_env().csv_cells  # cells the model's inputs may hold, one-hot categories included
        encoded: list[Encoded] = []
        for c in self._feature_columns(table):
            block = encode_feature(
                table, c, rows, categorical=c in declared, max_categories=opts.max_categories, max_cells=left
            )
            left -= block.block.size
            if left < 0:
                raise over_cells(table, block.block.size, block.block.size + left, c)
            encoded.append(block)
        used = [block for block in encoded if block.width]
        if not used:
            raise ProblemError(f"{PREFIX}: {table.path} has no usable feature column (every one is empty)")
        x = torch.as_tensor(np.concatenate([e.block for e in used], axis=1), dtype=torch.float32)
        self._tasks, self._in_dim = [t.task for t in targets], int(x.shape[1])
        self._notes = _notes(table, rows, encoded, targets, x.shape[1])
        return Dataset(
            train=_split(x, targets, rows.train),
            val=_split(x, targets, rows.val),
            test=_split(x, targets, rows.test) if rows.test.size else None,
        )

    def _feature_columns(self, table: Table) -> list[str]:
        opts = self.opts
        names = {spec.column for spec in self._targets}
        features = opts.features if opts.features is not None else [c for c in table.header if c not in names]
        for column in [*features, *opts.categorical]:
            table.require(column, "feature")
            if column in names:
                raise ProblemError(f"{PREFIX}: column {column!r} of {table.path} is a target; it cannot be a feature")
        chosen = set(features)
        stray = [c for c in opts.categorical if c not in chosen]
        if stray:
            raise ProblemError(f"{PREFIX}: categorical: column {stray[0]!r} of {table.path} is not a feature column")
        if not features:
            raise ProblemError(f"{PREFIX}: {table.path} has no feature columns left after removing the targets")
        return features


def _parse_chain(spec: str, targets: set[str]) -> tuple[str, str]:
    """``SOURCE:TARGET``, both target columns (the split is found even when a column's name holds a colon)."""
    for i, char in enumerate(spec):
        if char == ":" and spec[:i] in targets and spec[i + 1 :] in targets:
            if spec[:i] == spec[i + 1 :]:
                raise ProblemError(f"{PREFIX}: chain: {spec!r}: source and target are the same column")
            return spec[:i], spec[i + 1 :]
    source, sep, target = spec.partition(":")
    if not sep:
        raise ProblemError(f"{PREFIX}: chain: {spec!r}: expected SOURCE:TARGET (two target columns)")
    wrong = source if source not in targets else target
    raise ProblemError(
        f"{PREFIX}: chain: {spec!r}: column {wrong!r} is not a target; targets: {', '.join(sorted(targets))} "
        "(the chain's mode belongs to the training configuration: --chain SOURCE:TARGET:MODE)"
    )


def _split(x: torch.Tensor, targets: list[Target], rows: np.ndarray) -> Split:
    index = torch.from_numpy(rows)
    return Split(x[index], {t.task.name: t.take(rows) for t in targets})


def _notes(table: Table, rows: Rows, encoded: list[Encoded], targets: list[Target], width: int) -> list[str]:
    head = [
        f"{table.path.name}: {table.n_rows} rows: {len(rows.train)} train, {len(rows.val)} validation, "
        f"{len(rows.test)} test",
        f"{len(encoded)} feature columns as {width} inputs, numbers standardised with the training rows' mean and "
        f"spread; missing cells: empty or {', '.join(sorted(MISSING - {''}))}",
    ]
    return head + [e.note for e in encoded if e.note] + [note for t in targets for note in t.notes]
