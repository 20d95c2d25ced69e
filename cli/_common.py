"""What every command shares: turning known errors into one readable line and a non-zero exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known error types become ``error: ...`` on stderr and exit code 2, never a traceback."""
    try:
        yield
    except ValidationError as exc:
        raise fail(validation_message(exc)) from None
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise fail(str(exc)) from None


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
