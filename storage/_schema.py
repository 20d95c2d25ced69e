"""The schema, Optuna's tables and mtl-tune's, created in one place; mtl-tune's Alembic migrations run from code
(no alembic.ini at run time, and a version table apart from Optuna's)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import Connection, column, inspect, select, table, text

from storage._engine import (
    SQLITE_BEGIN_OPTION,
    SchemaOutdated,
    StorageError,
    engine_kwargs,
    get_engine,
    is_sqlite,
    normalize_url,
    parse_url,
    redact,
    translate_errors,
)
from storage.models import Base

if TYPE_CHECKING:  # alembic is imported on first use: it doubles the import time of ``storage``
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Optuna keeps its own schema revision in ``alembic_version``; ours must never touch it.
VERSION_TABLE = "mtl_tune_alembic_version"
VERSION_TABLES = (VERSION_TABLE, "alembic_version")  # mtl-tune's, Optuna's
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


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
    return _revisions(url)[0]


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate mtl-tune's tables to ``revision``, creating Optuna's tables first where they are missing; returns
    the revision the database is at afterwards."""
    with schema_lock(url):
        if _revisions(url)[1] is None:
            _create_optuna_tables(url)
        _migrate(url, revision)
    return current_revision(url)


def ensure_schema(url: str) -> str:
    """Create the whole schema in an empty database; refuse a database at an older revision.

    Returns the current revision. Raises ``SchemaOutdated`` (naming ``mtl-tune db upgrade``) rather than
    upgrading a shared database behind its other users' backs.
    """
    head = head_revision()
    current = create_missing(url)
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


def create_missing(url: str) -> str | None:
    """Create what the schema lacks: Optuna's tables, then mtl-tune's at head. Returns mtl-tune's revision.

    A database with both schemas costs one look at the two version tables. Otherwise the creation runs under
    ``schema_lock``, so processes starting together on an empty database (workers, ``serve``, ``study run``, on
    one machine or many) set it up once: the others wait, then find it complete. Tables of mtl-tune without a
    revision are left alone (the revision returned is then None).
    """
    ours, optunas = _revisions(url)
    if ours is not None and optunas is not None:
        return ours
    with schema_lock(url):
        ours, optunas = _revisions(url)  # another process may have created it while this one waited
        if optunas is None:
            _create_optuna_tables(url)
        if ours is None and not _has_project_tables(url):
            _migrate(url, "head")
            ours = head_revision()
    return ours


def _revisions(url: str) -> tuple[str | None, str | None]:
    """(mtl-tune's revision, Optuna's); None for a schema never created. Optuna records its revision once its
    tables are all there."""
    with translate_errors(url), get_engine(url).connect() as connection:
        tables = set(inspect(connection).get_table_names())
        ours, optunas = (_version(connection, name) if name in tables else None for name in VERSION_TABLES)
        return ours, optunas


def _version(connection: Connection, version_table: str) -> str | None:
    return connection.scalar(select(column("version_num")).select_from(table(version_table)))


def _create_optuna_tables(url: str) -> None:
    """Through Optuna's public API: its storage creates its tables and records their revision."""
    import optuna

    with translate_errors(url):
        optuna.storages.RDBStorage(normalize_url(url), engine_kwargs=engine_kwargs(url)).engine.dispose()


def _migrate(url: str, revision: str) -> None:
    from alembic import command

    with translate_errors(url), get_engine(url).connect() as connection:
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with connection.begin():
            command.upgrade(_config(connection), revision)


def _has_project_tables(url: str) -> bool:
    with translate_errors(url), get_engine(url).connect() as connection:
        return bool(set(inspect(connection).get_table_names()) & set(Base.metadata.tables))


# --- one process at a time sets up or migrates a database's schema, however many start on it together ---

# Also the key older versions took with pg_advisory_xact_lock around their migrations: the two exclude each other.
PG_LOCK_KEY = 0x6D746C74756E65  # "mtltune"
LOCK_FILE_SUFFIX = "-schema.lock"

_in_memory = threading.Lock()


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Held while the schema is created or migrated; other processes wait for it, on any machine.

    PostgreSQL: a session-level advisory lock on a connection of its own, so the work inside may use any number
    of connections (Optuna's engine creates Optuna's tables). SQLite: ``flock`` on a file beside the database,
    not a lock inside it: a ``BEGIN EXCLUSIVE`` would also keep out this process's other connections.
    """
    if is_sqlite(url):
        path = _sqlite_lock_path(url)
        if path is None:  # an in-memory database: no other process can see it
            with _in_memory:
                yield
            return
        with _file_lock(path):
            yield
        return
    with translate_errors(url), get_engine(url).connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            # Ending the session releases the lock, even when the connection is in no state to unlock.
            connection.invalidate()


def _sqlite_lock_path(url: str) -> str | None:
    database = parse_url(url).database
    if not database or database == ":memory:" or "mode=memory" in database:
        return None
    if database.startswith("file:"):  # a URI filename (``?uri=true``)
        database = urlsplit(database).path
    return database + LOCK_FILE_SUFFIX


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    import fcntl  # POSIX; SQLite serves one machine, and flock is what its processes share there

    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
