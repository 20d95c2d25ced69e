"""The csv problem's feature columns as model inputs: numbers standardised, missing numbers imputed with an
indicator column, categories one-hot. Every statistic (mean, spread, which categories exist) comes from the
training rows only."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from tuner.limits import LimitError, Limits, variable
from tuner.problems._csv_table import Rows, Table, check_finite, mean_std, missing_cells, parse_numbers

#: The category a categorical column's missing cells form.
MISSING_CATEGORY = "(missing)"


@dataclass(frozen=True)
class Encoded:
    """One feature column's input block (one row per data row, ``width`` columns) and what was done, if notable."""

    block: np.ndarray
    note: str | None = None

    @property
    def width(self) -> int:
        return int(self.block.shape[1])


def encode_feature(
    table: Table, column: str, rows: Rows, *, categorical: bool, max_categories: int, max_cells: int | None = None
) -> Encoded:
    """A declared categorical column is one-hot; so is one with a non-missing cell that is not a number.

    A one-hot block of more than ``max_cells`` cells is refused before it is made (``LimitError``)."""
    cells = table.require(column, "feature")
    missing = missing_cells(cells)
    if categorical:
        return _one_hot(table, column, missing, rows, max_categories, "declared categorical", max_cells)
    values, bad = parse_numbers(cells, missing)
    if bad is not None:
        row, cell = bad
        reason = f"detected categorical: {cell!r} in data row {row} is not a number"
        return _one_hot(table, column, missing, rows, max_categories, reason, max_cells)
    check_finite(table, column, "feature", values)
    return _numeric(column, values, missing, rows)


def _numeric(column: str, values: np.ndarray, missing: np.ndarray, rows: Rows) -> Encoded:
    known = values[rows.train][~missing[rows.train]]
    if not known.size:
        return Encoded(np.zeros((len(values), 0)), f"column {column!r}: no value in any training row; not used")
    mean, std = mean_std(known)
    # Standardised, a missing cell imputed with the training mean is exactly 0.
    scaled = np.where(missing, 0.0, (values - mean) / std)
    n_missing = int(missing.sum())
    if not n_missing:
        return Encoded(scaled[:, None])
    note = (
        f"column {column!r}: {n_missing} missing values imputed with the training mean ({mean:.4g}), "
        "missing-indicator column added"
    )
    return Encoded(np.stack([scaled, missing.astype(np.float64)], axis=1), note)


def _one_hot(
    table: Table,
    column: str,
    missing: np.ndarray,
    rows: Rows,
    max_categories: int,
    reason: str,
    max_cells: int | None,
) -> Encoded:
    """One column per kept category: the ``max_categories`` most frequent in the training rows (ties by name).

    Any other value (a rarer one, or one no training row has) is "other": all zeros.
    """
    cells = table.columns[column]
    values = [MISSING_CATEGORY if gone else cell for cell, gone in zip(cells, missing, strict=True)]
    counts = Counter(values[i] for i in rows.train)
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    index = {value: i for i, value in enumerate(ranked[:max_categories])}
    if max_cells is not None and len(values) * len(index) > max_cells:
        raise over_cells(table, len(values) * len(index), max_cells, column)
    block = np.zeros((len(values), len(index)))
    positions = np.array([index.get(v, -1) for v in values])
    hit = np.flatnonzero(positions >= 0)
    block[hit, positions[hit]] = 1.0
    parts = [f"column {column!r}: {reason}; {len(index)} categories one-hot"]
    if len(ranked) > len(index):
        parts.append(f"{len(ranked) - len(index)} rarer ones as 'other' (all zeros)")
    unseen = sorted({values[i] for i in (*rows.val, *rows.test)} - counts.keys())
    if unseen:
        parts.append(f"{len(unseen)} values no training row has as 'other'")
    n_missing = int(missing.sum())
    if n_missing:
        parts.append(f"{n_missing} missing values as the category {MISSING_CATEGORY!r}")
    return Encoded(block, ", ".join(parts))


def over_cells(table: Table, cells: int, left: int, column: str) -> LimitError:
    """The model's inputs would hold more cells than the operator allows (``MTL_TUNE_MAX_CSV_CELLS``)."""
    limits = Limits.from_env()
    return LimitError(
        ("problem_options", "data"),
        f"{table.path.name}: column {column!r} would bring the model's inputs (rows x input columns, one-hot "
        f"categories included) {cells - left} cells over the maximum of {limits.csv_cells} "
        f"(set by {variable('csv_cells')}); lower max_categories or one-hot fewer columns",
    )
