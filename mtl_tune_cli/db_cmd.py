"""``mtl-tune db``: create the schema and migrate mtl-tune's tables (Optuna migrates its own tables:
``optuna storage upgrade``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from mtl_tune_cli._common import console, fail, user_errors
from mtl_tune_cli._options import StorageOption, resolve_storage

app = typer.Typer(help="Database schema: show or upgrade the revision of mtl-tune's tables.", no_args_is_help=True)


@contextmanager
def _storage_errors() -> Iterator[None]:
    import storage

    with user_errors():
        try:
            yield
        except storage.StorageError as exc:
            raise fail(str(exc)) from None


@app.command()
def upgrade(storage_url: StorageOption = None) -> None:
    """Create what the schema lacks (Optuna's tables, mtl-tune's) and migrate mtl-tune's tables to the newest
    revision."""
    import storage

    with _storage_errors():
        url = resolve_storage(storage_url)
        before = storage.current_revision(url)
        after = storage.upgrade(url)
    if before == after:
        console.print(f"{storage.redact(url)}: already at revision {after}", soft_wrap=True)
    else:
        console.print(f"{storage.redact(url)}: upgraded from revision {before or 'none'} to {after}", soft_wrap=True)


@app.command()
def current(storage_url: StorageOption = None) -> None:
    """Print the database's revision of mtl-tune's tables and the newest revision this version knows."""
    import storage

    with _storage_errors():
        url = resolve_storage(storage_url)
        revision = storage.current_revision(url)
        head = storage.head_revision()
    console.print(f"current: {revision or 'none'}")
    console.print(f"head: {head}")
