"""Storage URLs: the default, the PostgreSQL driver choice, and a printable form without the password."""

from __future__ import annotations

import functools
import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from storage._errors import StorageError

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
