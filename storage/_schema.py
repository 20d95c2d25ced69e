"""Alembic migrations run from code: no alembic.ini at run time, and a version table apart from Optuna's."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from storage._engine import SQLITE_BEGIN_OPTION, get_engine, translate_errors
from storage._errors import SchemaOutdated, StorageError
from storage._url import redact
from storage.models import Base

if TYPE_CHECKING:  # alembic is imported on first use: it doubles the import time of ``storage``
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Optuna keeps its own schema revision in ``alembic_version``; ours must never touch it.
VERSION_TABLE = "mtl_tune_alembic_version"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Serialises concurrent upgrades of one PostgreSQL database (e.g. several workers starting on an empty one).
_PG_LOCK_KEY = 0x6D746C74756E65  # "mtltune"


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision this version of mtl-tune knows."""
    head = _scripts().get_current_head()
    assert head is not None, "storage/migrations/versions is empty"
    return head


def current_revision(url: str) -> str | None:
    """The database's revision of mtl-tune's tables, None when they were never created."""
    from alembic.runtime.migration import MigrationContext

    with translate_errors(url), get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate mtl-tune's tables to ``revision``; returns the revision the database is at afterwards."""
    from alembic import command

    with translate_errors(url), get_engine(url).connect() as connection:
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            command.upgrade(_config(connection), revision)
    return current_revision(url)


def ensure_schema(url: str) -> str:
    """Create the tables in an empty database; refuse a database at an older revision.

    Returns the current revision. Raises ``SchemaOutdated`` (naming ``mtl-tune db upgrade``) rather than
    upgrading a shared database behind its other users' backs.
    """
    head = head_revision()
    current = current_revision(url)
    if current == head:
        return head
    if current is None:
        if not _has_project_tables(url):
            upgrade(url)  # under a lock: concurrent first starts set the database up once
            return head
        # Another process may have finished setting it up between the two looks.
        current = current_revision(url)
        if current == head:
            return head
        if current is None:
            raise StorageError(
                f"{redact(url)} has mtl-tune tables but no revision in {VERSION_TABLE}; "
                "it was not created by `mtl-tune db upgrade`"
            )
    if current not in {script.revision for script in _scripts().walk_revisions()}:
        raise StorageError(f"the database schema is at revision {current}, newer than this mtl-tune ({head})")
    raise SchemaOutdated(current, head)


def _has_project_tables(url: str) -> bool:
    with translate_errors(url), get_engine(url).connect() as connection:
        return bool(set(inspect(connection).get_table_names()) & set(Base.metadata.tables))
