"""Alembic environment: runs on the connection ``storage._schema`` hands over, and sees only mtl-tune's tables."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from storage._engine import default_url, get_engine
from storage._schema import VERSION_TABLE
from storage.models import Base


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    # Optuna's tables share the database; autogenerate must neither drop nor alter them.
    return type_ != "table" or name in Base.metadata.tables


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("mtl-tune migrations run online only: use `mtl-tune db upgrade`")

_connection = context.config.attributes.get("connection")
if _connection is not None:
    run(_connection)
else:  # the plain `alembic` command line, e.g. `alembic revision --autogenerate` while developing
    with get_engine(context.config.get_main_option("sqlalchemy.url") or default_url()).begin() as conn:
        run(conn)
