"""Per-epoch series in one JSON column: a strategy's per-task series (``sigma``, ``grad_norm``, any other it
reports) go into ``epoch_metrics.series`` by name instead of one column each, so a new strategy needs no schema
change. The loss weight stays a column of its own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: The series that had columns of their own before this revision.
_COLUMNS = ("sigma", "grad_norm")
_BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("epoch_metrics") as batch:
        batch.add_column(sa.Column("series", sa.JSON(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # One statement; a value PostgreSQL kept as NaN or an infinity (JSON has neither) becomes null, as new rows
        # store it, and a null column leaves its name out.
        parts = " || ".join(
            f"CASE WHEN {c} IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object('{c}', "
            f"CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE {c} END) END"
            for c in _COLUMNS
        )
        present = " OR ".join(f"{c} IS NOT NULL" for c in _COLUMNS)
        op.execute(f"UPDATE epoch_metrics SET series = ({parts})::json WHERE {present}")
    else:
        _copy_in_batches(bind)
    with op.batch_alter_table("epoch_metrics") as batch:
        for column in _COLUMNS:
            batch.drop_column(column)


def _table() -> sa.TableClause:
    return sa.table(
        "epoch_metrics",
        sa.column("id", sa.Integer()),
        sa.column("series", sa.JSON()),
        *(sa.column(c, sa.Float()) for c in _COLUMNS),
    )


def _copy_in_batches(bind: sa.Connection) -> None:
    """On SQLite the values are read and written here (its JSON functions depend on how it was built), a batch
    of rows at a time."""
    table = _table()
    columns = [table.c[c] for c in _COLUMNS]
    query = sa.select(table.c.id, *columns).where(sa.or_(*(c.isnot(None) for c in columns))).order_by(table.c.id)
    update = table.update().where(table.c.id == sa.bindparam("row_id")).values(series=sa.bindparam("new_series"))
    last = 0
    while rows := bind.execute(query.where(table.c.id > last).limit(_BATCH)).all():
        updates: list[dict[str, Any]] = []
        for row_id, *values in rows:
            numbers = {c: v for c, v in zip(_COLUMNS, values, strict=True) if v is not None}
            series = {c: v if math.isfinite(v) else None for c, v in numbers.items()}
            updates.append({"row_id": row_id, "new_series": series})
        bind.execute(update, updates)
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("epoch_metrics") as batch:
        for column in _COLUMNS:
            batch.add_column(sa.Column(column, sa.Float(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        sets = ", ".join(f"{c} = (series ->> '{c}')::float8" for c in _COLUMNS)
        op.execute(f"UPDATE epoch_metrics SET {sets} WHERE series IS NOT NULL")
    else:
        table = _table()
        rows = bind.execute(sa.select(table.c.id, table.c.series).where(table.c.series.isnot(None))).all()
        updates = [{"row_id": row_id, **{f"new_{c}": _number(series, c) for c in _COLUMNS}} for row_id, series in rows]
        if updates:
            values: dict[str, Any] = {c: sa.bindparam(f"new_{c}") for c in _COLUMNS}
            bind.execute(table.update().where(table.c.id == sa.bindparam("row_id")).values(values), updates)
    with op.batch_alter_table("epoch_metrics") as batch:
        batch.drop_column("series")


def _number(series: Any, name: str) -> float | None:
    if isinstance(series, str):  # a driver that hands JSON back as text
        series = json.loads(series)
    value = series.get(name) if isinstance(series, dict) else None
    return float(value) if isinstance(value, int | float) else None
