"""The storage errors callers catch, and the translation of driver errors into them."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

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
