"""The csv problem's table: its cells by column, which cells are missing, numbers, and the rows of each split."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.limits import Limits
from tuner.problems._task import ProblemError

PREFIX = "problem 'csv'"
#: Cells that mean "no value" (compared stripped and case-insensitively).
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


@dataclass(frozen=True)
class Table:
    """The file's header and its stripped cells by column name (one entry per data row, in file order)."""

    path: Path
    header: list[str]
    columns: dict[str, list[str]]
    n_rows: int

    def require(self, column: str, role: str) -> list[str]:
        """The column's cells; a name the header lacks is refused, naming it and the file."""
        cells = self.columns.get(column)
        if cells is None:
            raise ProblemError(
                f"{PREFIX}: {role} column {column!r} not found in {self.path}; columns: {', '.join(self.header)}"
            )
        return cells


@dataclass(frozen=True)
class Rows:
    """Row numbers (into the file's data rows) of each split; ``test`` is empty without a test split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def read_table(path: Path, limits: Limits | None = None) -> Table:
    """Read the file once; rows whose every cell is blank are skipped. A file over the operator's limits on columns,
    rows or cells is refused as soon as reading reaches the limit."""
    limits = limits or Limits.from_env()
    if not path.is_file():
        raise ProblemError(f"{PREFIX}: data file {str(path)!r} not found")
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            _check_size(path, limits, len(header), 0)
            rows: list[list[str]] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):  # refused at once: a row never holds more cells than the header
                    raise ProblemError(
                        f"{PREFIX}: {path} line {reader.line_num} has {len(row)} fields, the header has {len(header)}"
                    )
                rows.append(row)
                if len(rows) > limits.samples or len(rows) * len(header) > limits.csv_cells:
                    _check_size(path, limits, len(header), len(rows))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ProblemError(f"{PREFIX}: {path} is not a readable CSV file ({exc})") from None
    if not header or not rows:
        raise ProblemError(f"{PREFIX}: {path} is empty (it needs a header row and at least one data row)")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ProblemError(f"{PREFIX}: column {name!r} appears twice in the header of {path}")
        seen.add(name)
    # One pass over the rows turns them into columns; lookups by name are then a dict's.
    cells_by_column = zip(*rows, strict=True)
    columns = {name: [cell.strip() for cell in cells] for name, cells in zip(header, cells_by_column, strict=True)}
    return Table(path, header, columns, len(rows))


def _check_size(path: Path, limits: Limits, n_columns: int, n_rows: int) -> None:
    where = ("problem_options", "data")
    limits.check(where, "csv_columns", n_columns, what=f"{path.name}: columns")
    limits.check(where, "samples", n_rows, what=f"{path.name}: data rows")
    limits.check(where, "csv_cells", n_rows * n_columns, what=f"{path.name}: cells (rows x columns)")


def missing_cells(cells: list[str]) -> np.ndarray:
    """True where a cell is empty or one of the ``MISSING`` spellings."""
    return np.fromiter((cell.lower() in MISSING for cell in cells), dtype=bool, count=len(cells))


def parse_numbers(cells: list[str], missing: np.ndarray) -> tuple[np.ndarray, tuple[int, str] | None]:
    """The cells as float64 (NaN where missing) and the first non-numeric cell as (data row number, cell), if any."""
    values = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        if missing[i]:
            continue
        try:
            values[i] = float(cell)
        except ValueError:
            return values, (i + 1, cell)
    return values, None


def check_finite(table: Table, column: str, role: str, values: np.ndarray) -> None:
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        raise ProblemError(
            f"{PREFIX}: {role} column {column!r} in {table.path} has an infinite value (data row {infinite[0] + 1})"
        )


def split_rows(table: Table, val_fraction: float, test_fraction: float, seed: int) -> Rows:
    """A seeded shuffle of the data rows: the first ones validate, the next ones test, the rest train."""
    n = table.n_rows
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        splits = (
            "train/validation/test split (test_fraction=0 drops the test split)" if n_test else "train/validation split"
        )
        raise ProblemError(f"{PREFIX}: {table.path} has {n} rows, too few for a {splits}")
    order = np.random.default_rng(seed).permutation(n)
    return Rows(train=order[n_val + n_test :], val=order[:n_val], test=order[n_val : n_val + n_test])


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (1 for a constant column, so it scales to zeros rather than NaN)."""
    std = float(values.std())
    return float(values.mean()), std if std > 0 else 1.0
