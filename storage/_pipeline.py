"""PostgreSQL: a running trial's statements sent on one connection without waiting for each other's reply.

libpq's pipeline mode (through ``psycopg.pq``): every ``send`` ends with a sync point, so what it sends is a
transaction of its own, and the server runs them in the order they were sent while the trial trains on. Their
replies are read when they have arrived, without waiting, or, with ``wait``, as soon as they arrive.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import selectors
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import Connection, Engine

from storage._errors import StorageError, StorageUnavailable

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_names = itertools.count()  # prepared statement names, unique in the process

Reply = tuple[str | None, ...]
Statement = tuple[str, Mapping[str, Any]]  # SQL with ``%(name)s`` placeholders, and its parameters


@dataclass
class _Sent:
    on_reply: Callable[[Reply], None] | None
    on_error: Callable[[], None] | None
    row: Reply | None = None  # the row of the latest statement read of this transaction
    failed: bool = False


class Pipeline:
    """One pooled connection, held until ``close``, in pipeline mode.

    ``send`` queues one transaction (one or more statements) and returns at once. Replies are read in the order
    sent: ``on_reply`` is called with the first row of the transaction's last statement, if it returns one (as
    text, None for nulls); if the transaction failed, it was rolled back and ``on_error`` is called. Transactions
    sent after a failed one still run and are read as usual, but the first failure is raised by the call that
    read it and by every later one, and nothing more can be sent (``failed`` tells).

    ``prepare`` prepares each statement text once, for a pipeline that sends the same statements many times (a
    trial's epochs); a one-off transaction sends unnamed statements and leaves nothing to close.
    """

    def __init__(self, engine: Engine, *, prepare: bool = True) -> None:
        self._connection: Connection = engine.connect()
        try:
            driver = self._connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            self._pgconn = driver.pgconn
            self._transformer = Transformer.from_context(driver)
            self._prepare = prepare
            self._in_flight: deque[_Sent | None] = deque()
            self._prepared: dict[str, bytes] = {}  # statement text -> prepared statement name
            self._failure: Exception | None = None
            self._broken = False  # the connection itself failed: nothing more can be read
            # Not select.select: a long-running process's sockets can have descriptors above FD_SETSIZE.
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._pgconn.socket, selectors.EVENT_READ)
            self._pgconn.enter_pipeline_mode()
        except BaseException:
            self._connection.invalidate()
            self._connection.close()
            raise

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def idle(self) -> bool:
        """Every reply has been read."""
        return not self._in_flight

    def send(
        self,
        statements: Sequence[Statement],
        on_reply: Callable[[Reply], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``statements`` as one transaction and flush them to the server.

        Parameters travel as text, which the server parses as the types the statement casts them to; lists as
        PostgreSQL array text (``array_literal``).
        """
        self._raise_failure()
        try:
            for statement, params in statements:
                sql, names = _numbered(statement)
                values = [array_literal(v) if isinstance(v := params[name], list) else v for name in names]
                dumped = self._transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
                if not self._prepare:
                    self._pgconn.send_query_params(sql.encode(), dumped)
                    continue
                # Prepared once per pipeline, not per pooled connection: psycopg deallocates every prepared
                # statement of a connection that rolls back.
                name = self._prepared.get(sql)
                if name is None:
                    name = self._prepared[sql] = f"mtl_tune_{next(_names)}".encode()
                    self._pgconn.send_prepare(name, sql.encode())
                self._pgconn.send_query_prepared(name, dumped)
            self._pgconn.pipeline_sync()  # the sync point ends the transaction
            self._in_flight.append(_Sent(on_reply, on_error))
            self._flush()
        except psycopg.Error as exc:
            self._fail(exc)
            self._raise_failure()
        except BaseException as exc:  # a bad parameter, Ctrl-C: what reached the server is unknown
            self._fail(StorageError(f"pipeline interrupted: {exc!r}"))
            raise

    def alive(self) -> bool:
        """With nothing in flight, whether the connection still answers: a sync point alone, one round trip."""
        if self._failure is None and not self._in_flight:
            try:
                self._pgconn.pipeline_sync()
                self._in_flight.append(None)
            except psycopg.Error as exc:
                self._fail(exc)
            self._read(block=True)
        return self._failure is None

    def poll(self) -> None:
        """Read every reply that has arrived, without waiting."""
        self._read(block=False)
        self._raise_failure()

    def wait(self) -> None:
        """Read the replies of everything sent so far."""
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
            self._selector.close()
            if self._failure is not None or self._in_flight:
                self._connection.invalidate()  # its state is unknown: the pool must not hand it out again
            self._connection.close()
        self._raise_failure()

    def _read(self, *, block: bool) -> None:
        pgconn = self._pgconn
        try:
            self._flush()
            while self._in_flight and not self._broken:
                pgconn.consume_input()
                if pgconn.is_busy():
                    if not block:
                        return
                    self._wait_for(selectors.EVENT_READ)
                    continue
                result = pgconn.get_result()
                sent = self._in_flight[0]
                if result is None or result.status == pq.ExecStatus.COMMAND_OK:
                    continue  # the end of one statement's results; a statement prepared or closed
                if result.status == pq.ExecStatus.TUPLES_OK:
                    if sent is not None:  # the latest statement's first row, or None when it has none
                        n = result.nfields
                        sent.row = tuple(_text(result.get_value(0, c)) for c in range(n)) if result.ntuples else None
                elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                    self._in_flight.popleft()
                    if sent is not None and not sent.failed and sent.on_reply is not None and sent.row is not None:
                        sent.on_reply(sent.row)
                elif result.status == pq.ExecStatus.PIPELINE_ABORTED:
                    continue  # a statement skipped after its transaction's failure
                elif sent is not None and not sent.failed:  # this transaction failed and was rolled back
                    sent.failed = True
                    if sent.on_error is not None:
                        sent.on_error()
                    if self._failure is None:
                        self._failure = _error(result)
        except psycopg.Error as exc:
            self._fail(exc)

    def _flush(self) -> None:
        """The connection does not block on writes: send what libpq buffered before waiting for replies."""
        while self._pgconn.flush():
            self._wait_for(selectors.EVENT_WRITE)

    def _wait_for(self, event: int) -> None:
        self._selector.modify(self._pgconn.socket, event)
        self._selector.select()

    def _fail(self, exc: Exception) -> None:
        """The connection failed: whether the transactions in flight ran is unknown, so none is given back, and
        nothing more is read."""
        self._broken = True
        if self._failure is None:
            self._failure = exc

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, StorageError):
            raise failure
        kind = StorageUnavailable if isinstance(failure, psycopg.OperationalError) else StorageError
        raise kind(f"a pipelined statement failed: {failure}") from failure


def _error(result: pq.abc.PGresult) -> Exception:
    """The psycopg exception for a failed result, by its SQLSTATE."""
    message = (_text(result.error_message) or "a pipelined statement failed").strip()
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    try:
        kind = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.DatabaseError
    except KeyError:
        kind = psycopg.DatabaseError
    return kind(message)


def pipeline_supported(engine: Engine) -> bool:
    """PostgreSQL through psycopg and a libpq with pipeline mode (14 or newer; psycopg's binary package bundles
    one)."""
    return (
        engine.dialect.name == "postgresql"
        and engine.dialect.driver == "psycopg"
        and psycopg.capabilities.has_pipeline()
    )


def run_transaction(engine: Engine, statements: Sequence[Statement]) -> Reply | None:
    """Run ``statements`` as one transaction in one round trip; the first row of the last one, if it has one.

    For transactions whose statements need no decision in between: the server runs them in order, each with a
    snapshot taken when it starts, so a statement after a ``FOR UPDATE`` lock sees everything committed before
    the lock was granted.
    """
    rows: list[Reply] = []
    pipeline = Pipeline(engine, prepare=False)
    try:
        pipeline.send(statements, on_reply=rows.append)
        pipeline.wait()
    finally:
        pipeline.close()
    return rows[0] if rows else None


def array_literal(values: Sequence[Any]) -> str:
    """A list as PostgreSQL's array input text (``{1.5,NULL,"a b"}``), for a parameter the statement casts to an
    array type. psycopg's own list dumper inspects every element in Python; a trial's statements carry a dozen
    short lists per epoch."""
    return "{" + ",".join(_element(v) for v in values) + "}"


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no array literal for {type(value).__name__} elements")


def _text(value: Any) -> str | None:
    return None if value is None else bytes(value).decode(errors="replace")


@functools.cache
def _numbered(statement: str) -> tuple[str, tuple[str, ...]]:
    """``%(name)s`` placeholders as libpq's ``$1, $2, ...``, and the names in that order."""
    names: dict[str, int] = {}
    sql = _PLACEHOLDER.sub(lambda m: f"${names.setdefault(m.group(1), len(names) + 1)}", statement)
    return sql, tuple(names)
