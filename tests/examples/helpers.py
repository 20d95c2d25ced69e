"""Running ``mtl-tune`` commands in-process, and reading the tables they print."""

from __future__ import annotations

import re

from typer.testing import CliRunner, Result

from mtl_tune_cli.main import app

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(*args: str) -> Result:
    """An ``mtl-tune`` command run in-process (no new interpreter, so no second import of torch)."""
    return CliRunner().invoke(app, list(args))


def row_of(output: str, task: str) -> list[str]:
    """The cells of the table row that starts with ``task``."""
    for line in ANSI.sub("", output).splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == task:
            return cells
    raise AssertionError(f"no row for task {task!r} in:\n{output}")
