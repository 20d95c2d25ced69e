"""PostgreSQL: a running trial's statements sent on one connection without waiting for each other's reply.

libpq's pipeline mode (through ``psycopg.pq``): every statement is followed by a sync point, so it is a
transaction of its own, and the server runs them in the order they were sent while the trial trains on. Their
replies are read when they have arrived, without waiting, and all of them before the trial's final state is
written.
"""

from __future__ import annotations

import functools
import itertools
import re
import select
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import Connection, Engine

from storage._errors import StorageError

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_names = itertools.count()  # prepared statement names, unique in the process

Reply = tuple[str | None, ...]


class Pipeline:
    """One pooled connection, held until ``close``, in pipeline mode.

    ``send`` queues a statement and returns at once; ``on_reply`` is called with the statement's single row
    (as text, or None for nulls) when it has been read, in the order sent. ``on_error`` is called with what was
    passed to ``send`` for a statement that failed (and was rolled back); the failure is raised by the next
    ``send``, ``poll``, ``wait`` or ``close``, after which nothing more is read.
    """

    def __init__(self, engine: Engine, on_reply: Callable[[Reply], None], on_error: Callable[[Any], None]) -> None:
        self._connection: Connection = engine.connect()
        driver = self._connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        self._driver = driver
        self._pgconn = driver.pgconn
        self._transformer = Transformer.from_context(driver)
        self._on_reply, self._on_error = on_reply, on_error
        self._in_flight: deque[Any] = deque()
        self._prepared: dict[str, bytes] = {}  # statement text -> prepared statement name
        self._failure: Exception | None = None
        self._pgconn.enter_pipeline_mode()

    def send(self, statement: str, params: Mapping[str, Any], token: Any = None) -> None:
        """Queue ``statement`` (with ``%(name)s`` placeholders) and flush it to the server.

        Each statement text is prepared once per pipeline: the server plans it once, not at every epoch. (Not
        once per pooled connection: psycopg deallocates every prepared statement of a connection that rolls
        back.) Parameters travel as text, which the server parses as the prepared statement's types.
        """
        self._raise_failure()
        sql, names = _numbered(statement)
        values = [params[name] for name in names]
        dumped = self._transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
        try:
            name = self._prepared.get(sql)
            if name is None:
                name = self._prepared[sql] = f"mtl_tune_{next(_names)}".encode()
                self._pgconn.send_prepare(name, sql.encode())
            self._pgconn.send_query_prepared(name, dumped)
            self._pgconn.pipeline_sync()  # a sync point: the statement commits on its own
            self._flush()
        except psycopg.Error as exc:
            self._fail(exc)
            self._raise_failure()
        self._in_flight.append(token)

    def poll(self) -> None:
        """Read every reply that has arrived, without waiting."""
        self._read(block=False)
        self._raise_failure()

    def wait(self) -> None:
        """Read the replies of every statement sent so far."""
        self._read(block=True)
        self._raise_failure()

    def close(self) -> None:
        """Wait for every reply, leave pipeline mode and give the connection back to the pool."""
        try:
            if self._failure is None and self._prepared:  # the connection goes back to the pool without them
                for name in self._prepared.values():
                    self._pgconn.send_close_prepared(name)
                self._pgconn.pipeline_sync()
                self._in_flight.append(None)
            self._read(block=True)
            if self._failure is None:
                self._pgconn.exit_pipeline_mode()
        except psycopg.Error as exc:
            self._fail(exc)
        finally:
            if self._failure is not None:
                self._connection.invalidate()  # its state is unknown: the pool must not hand it out again
            self._connection.close()
        self._raise_failure()

    def _read(self, *, block: bool) -> None:
        pgconn = self._pgconn
        try:
            self._flush()
            while self._in_flight and self._failure is None:
                pgconn.consume_input()
                if pgconn.is_busy():
                    if not block:
                        return
                    select.select([pgconn.socket], [], [])
                    continue
                result = pgconn.get_result()
                if result is None:
                    continue  # the end of one statement's results
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    self._in_flight.popleft()
                elif result.status == pq.ExecStatus.COMMAND_OK:
                    continue  # a statement prepared or closed
                elif result.status == pq.ExecStatus.TUPLES_OK:
                    self._on_reply(tuple(_text(result.get_value(0, c)) for c in range(result.nfields)))
                else:  # this statement failed and was rolled back; later ones are not read
                    self._on_error(self._in_flight.popleft())
                    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
                    error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.DatabaseError
                    self._failure = error((_text(result.error_message) or "a pipelined statement failed").strip())
        except psycopg.Error as exc:
            self._fail(exc)

    def _flush(self) -> None:
        """The connection does not block on writes: send what libpq buffered before waiting for replies."""
        while self._pgconn.flush():
            select.select([], [self._pgconn.socket], [])

    def _fail(self, exc: Exception) -> None:
        """The connection failed: whether the statements in flight ran is unknown, so none is given back."""
        self._in_flight.clear()
        if self._failure is None:
            self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise StorageError(f"a pipelined statement failed: {self._failure}") from self._failure


def _text(value: Any) -> str | None:
    return None if value is None else bytes(value).decode(errors="replace")


@functools.cache
def _numbered(statement: str) -> tuple[str, tuple[str, ...]]:
    """``%(name)s`` placeholders as libpq's ``$1, $2, ...``, and the names in that order."""
    names: dict[str, int] = {}
    sql = _PLACEHOLDER.sub(lambda m: f"${names.setdefault(m.group(1), len(names) + 1)}", statement)
    return sql, tuple(names)
