"""One engine per URL per process, and the session scope every storage call runs in."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session

from storage._errors import translate
from storage._url import is_sqlite, normalize_url, redact

SQLITE_BUSY_TIMEOUT_S = 30
SQLITE_BEGIN_OPTION = "mtl_tune_sqlite_begin"
# A pooled PostgreSQL connection is pinged before use when it sat idle longer than this (see ``ping_when_idle``).
PING_AFTER_IDLE_S = 1.0
_IDLE_SINCE = "mtl_tune_idle_since"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine_kwargs(url: str) -> dict[str, Any]:
    """``create_engine`` settings for a normalized URL; Optuna's engine gets the same ones."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {
        "pool_size": 5,
        "max_overflow": 5,
        "pool_pre_ping": False,  # ``ping_when_idle`` instead
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 10},
    }


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url`` (normalized first), created on first use."""
    url = normalize_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create(url)
    return engine


def dispose_engines(*, close: bool = True) -> None:
    """Forget every cached engine; in a forked child pass ``close=False`` to leave the parent's sockets alone."""
    from storage._optuna import clear_optuna_storages

    clear_optuna_storages()
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose(close=close)


def _create(url: str) -> Engine:
    engine = create_engine(url, **engine_kwargs(url))
    if is_sqlite(url):
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, as ``pool_pre_ping``, for connections that sat idle in the pool.

    A connection that dies while idle (a restarted server, ``pg_terminate_backend``, a firewall's timeout) is
    found by a ping at checkout and replaced, with every older pooled connection, before the caller uses it.
    ``pool_pre_ping`` pings at every checkout: a round trip each time, several per trial for a worker. Here a
    connection back in the pool for less than ``PING_AFTER_IDLE_S`` is handed out as it is; one that dies within
    that second fails its next statement (as it would if it died mid-statement), after which SQLAlchemy replaces
    the pool's connections.
    """

    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return  # a new connection, or one used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise InvalidatePoolError(f"ping of an idle pooled connection failed: {exc}") from exc

    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)


def _wal(cursor: Any) -> None:
    """Switch the database to WAL. Switching a new database needs it to itself, and SQLite answers "database is
    locked" at once, without its busy handler, while another process is connecting to it too (processes starting
    together on a new file): tried again for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's legacy mode only BEGINs before DML, so a SELECT and a later UPDATE would not share a transaction;
    # SQLAlchemy emits BEGIN itself instead (see its "Serializable isolation / Savepoints / Transactional DDL").
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    _wal(cursor)
    # In WAL mode NORMAL is safe against application crashes and skips an fsync per commit; only an OS crash
    # or power loss can lose the last commits (SQLite's documented trade-off for WAL).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def write_lock(session: Session) -> None:
    """On SQLite, start the session's transaction with ``BEGIN IMMEDIATE``; a no-op on PostgreSQL.

    Call it before the session's first statement in functions that read and then write: a deferred SQLite
    transaction that has read cannot later take the write lock once another writer committed (SQLITE_BUSY,
    which the busy timeout does not retry), whereas ``BEGIN IMMEDIATE`` waits for the lock up-front.
    """
    if session.in_transaction() or session.get_bind().dialect.name != "sqlite":
        return
    session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Driver errors meaning "unreachable" or "busy" become ``StorageUnavailable`` / ``StorageError``."""
    try:
        yield
    except DBAPIError as exc:
        storage_error = translate(exc, redact(url))
        if storage_error is None:
            raise
        raise storage_error from exc


@contextmanager
def write_transaction(url: str) -> Iterator[Connection]:
    """A connection in a transaction that commits when the block succeeds, for Core statements that read and
    then write (``BEGIN IMMEDIATE`` on SQLite, as ``write_lock``); cheaper than a session where no ORM object
    is needed."""
    with (
        translate_errors(url),
        get_engine(url).connect() as connection,
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"}).begin(),
    ):
        yield connection


@contextmanager
def read_connection(url: str) -> Iterator[Connection]:
    """A connection for reads. On PostgreSQL each statement commits on its own: that spares a read its BEGIN and
    ROLLBACK round trips and sees what a READ COMMITTED transaction's statements would. SQLite, whose statements
    cost no round trip, reads in a transaction."""
    with translate_errors(url), get_engine(url).connect() as connection:
        if connection.dialect.name != "sqlite":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises.

    Objects stay readable after the block (no expiry on commit).
    """
    engine = get_engine(url)
    with translate_errors(url):
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            _rollback_quietly(session)
            raise
        finally:
            session.close()


def _rollback_quietly(session: Session) -> None:
    with suppress(DBAPIError):  # the connection is already gone; the error being raised says why
        session.rollback()
