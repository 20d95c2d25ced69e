"""Storage URLs, one engine per URL per process, the session scope every storage call runs in, and the storage
errors callers catch (driver errors translated into them)."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, InvalidatePoolError, OperationalError
from sqlalchemy.orm import Session

# --- errors ----------------------------------------------------------------------------------------------------

# SQLSTATE classes meaning "the server is not there or is going away": connection exceptions (08xxx) and
# operator intervention (admin/crash shutdown, cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


class StorageError(Exception):
    """Base class of every error ``storage`` raises on purpose."""


class StorageUnavailable(StorageError):
    """The database cannot be reached (server down, refused, connection lost); retrying later may help."""


class SchemaOutdated(StorageError):
    """The database holds an older revision of mtl-tune's tables; ``mtl-tune db upgrade`` fixes it."""

    def __init__(self, current: str, head: str) -> None:
        super().__init__(
            f"the database schema is at revision {current}, this mtl-tune needs {head}; "
            "run `mtl-tune db upgrade` (with the same --storage) to migrate it"
        )
        self.current = current
        self.head = head


class StudyExists(StorageError):
    """A study job with this name already exists."""


class StudyNotFound(StorageError):
    """No study job has this name."""


def is_unavailable(exc: DBAPIError) -> bool:
    """Whether a driver error means the database is unreachable rather than a bad statement."""
    if isinstance(exc, InterfaceError) or exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_CANTOPEN":
        return True
    if type(orig).__module__.startswith("psycopg"):
        # psycopg leaves sqlstate empty for client-side failures such as a refused connection.
        sqlstate = getattr(orig, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    return False


def translate(exc: DBAPIError, where: str) -> StorageError | None:
    """The ``StorageError`` to raise instead of ``exc``, or None when ``exc`` is a bug to surface as is."""
    detail = str(exc.orig).strip()
    first_line = detail.splitlines()[0] if detail else type(exc.orig).__name__
    if is_unavailable(exc):
        return StorageUnavailable(f"storage unavailable at {where}: {first_line}")
    if isinstance(exc, OperationalError):  # locked, deadlock, serialization failure: transient, not a bug
        return StorageError(f"database error at {where}: {first_line}")
    return None


# --- URLs ------------------------------------------------------------------------------------------------------

ENV_VAR = "MTL_TUNE_STORAGE"
DEFAULT_URL = "sqlite:///mtl-tune.db"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def default_url() -> str:
    """``$MTL_TUNE_STORAGE``, else the embedded SQLite file ``mtl-tune.db`` in the working directory."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"invalid storage URL {url!r}: {exc}") from None


@functools.lru_cache(maxsize=64)
def normalize_url(url: str) -> str:
    """Pick psycopg 3 for bare PostgreSQL URLs and check that the URL parses (cached: every session asks)."""
    url = url.strip()
    for prefix in _POSTGRES_PREFIXES:
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url.removeprefix(prefix)
            break
    parsed = parse_url(url)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StorageError(f"invalid storage URL {redact(url)!r}: only sqlite:// and postgresql:// are supported")
    return url


def redact(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def is_sqlite(url: str) -> bool:
    return parse_url(url).get_backend_name() == "sqlite"


# --- engines and sessions --------------------------------------------------------------------------------------

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
