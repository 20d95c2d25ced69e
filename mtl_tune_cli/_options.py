"""Options several commands share."""

from __future__ import annotations

from typing import Annotated

import typer

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="MTL_TUNE_STORAGE",
        help="SQLAlchemy URL of the study database (default: sqlite:///mtl-tune.db in the working directory; "
        "postgresql+psycopg://user@host/db when several machines share studies).",
        show_envvar=True,
    ),
]


def resolve_storage(value: str | None) -> str:
    import storage

    return storage.normalize_url(value or storage.default_url())
