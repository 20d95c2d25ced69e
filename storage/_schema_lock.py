"""One process at a time sets up or migrates a database's schema, however many start on it together."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from sqlalchemy import text

from storage._engine import get_engine, translate_errors
from storage._url import is_sqlite, parse_url

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
