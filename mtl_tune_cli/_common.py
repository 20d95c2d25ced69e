"""What every command shares: turning known errors into one readable line and a non-zero exit."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class _StderrHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a record arrives, not as it was when the handler was made (a test
    runner or a pipe may have replaced it since)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_log_handler = _StderrHandler()
_log_handler.setFormatter(logging.Formatter("%(levelname)-5.5s [%(name)s] %(message)s"))


def configure_logging(verbose: bool) -> None:
    """Optuna's and Alembic's INFO lines (a new study, each trial, each schema migration) only with ``--verbose``;
    warnings and errors always."""
    import optuna

    level = logging.INFO if verbose else logging.WARNING
    optuna.logging.set_verbosity(level)
    alembic = logging.getLogger("alembic")
    if _log_handler not in alembic.handlers:
        alembic.addHandler(_log_handler)
        alembic.propagate = False
    alembic.setLevel(level)
    # Optuna's storage sets the "alembic" logger to WARNING whenever it opens a database; the migration runner's own
    # logger keeps the chosen level regardless.
    logging.getLogger("alembic.runtime.migration").setLevel(level)


def show_worker_log() -> None:
    """A worker's own lines on stderr: one per trial (study, number, state, objective, seconds), and its warnings."""
    worker_log = logging.getLogger("mtl_tune.worker")
    if _log_handler not in worker_log.handlers:
        worker_log.addHandler(_log_handler)
        worker_log.propagate = False
    worker_log.setLevel(logging.INFO)


def print_table(table: Table) -> None:
    """On a terminal, as wide as it is; piped output (scripts, files) gets whole names instead of columns cut to a
    guessed 80-character terminal."""
    (console if console.is_terminal else Console(width=200)).print(table)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the ``typer.Exit`` to raise."""
    # Messages quote user data (``['a', 'b']``, paths): escape it from rich markup, and keep it one line.
    one_line = " ".join(message.splitlines())
    err_console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: message; ...`` (a model validator's own message stands alone)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known error types become ``error: ...`` on stderr and exit code 2, never a traceback."""
    try:
        yield
    except ValidationError as exc:
        raise fail(validation_message(exc)) from None
    except (ValueError, OSError, KeyError) as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        from storage import StorageError  # imported here: `mtl-tune --help` stays fast

        if isinstance(exc, StorageError):  # unknown study, unreachable database, outdated schema
            raise fail(str(exc)) from None
        raise


#: The longest wait between two attempts to reach a database server at start.
MAX_WAIT_SECONDS = 30.0


def wait_for_database(url: str) -> None:
    """Check (on an empty database: create) the schema of ``url``, waiting while a database server is unreachable.

    A server that refuses connections or lacks the database yet is tried again and again, 1 s apart, doubling up to
    ``MAX_WAIT_SECONDS``, with one line on stderr per attempt; Ctrl-C ends the wait. SQLite files, and any other
    error (an outdated schema), raise at once.
    """
    import storage

    delay = 1.0
    while True:
        try:
            storage.ensure_schema(url)
            return
        except storage.StorageUnavailable as exc:
            if url.startswith("sqlite"):
                raise
            err_console.print(f"waiting for the database ({exc}); next try in {delay:.0f} s",
                              highlight=False, soft_wrap=True, markup=False)  # fmt: skip
        time.sleep(delay)
        delay = min(MAX_WAIT_SECONDS, 2 * delay)


def parse_assignments(values: list[str] | None, flag: str) -> dict[str, Any]:
    """``a=1,b=2`` or repeated ``--flag a=1`` into a dict of floats."""
    out: dict[str, Any] = {}
    for value in values or []:
        for item in filter(None, value.split(",")):
            name, sep, number = item.partition("=")
            if not sep:
                raise fail(f"{flag}: expected TASK=VALUE, got {item!r}")
            try:
                out[name.strip()] = float(number)
            except ValueError:
                raise fail(f"{flag}: {number!r} is not a number (in {item!r})") from None
    return out
