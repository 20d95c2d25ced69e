"""Fresh PostgreSQL databases for tests: ``fresh_database()`` or the ``pg_url`` fixture.

The server is the one at 127.0.0.1:5432 (override with ``MTL_TUNE_TEST_PG``, a libpq connection string for the
admin database). Tests skip when it is unreachable, unless ``CI=true``: then they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import psycopg
import pytest
from psycopg import sql

import storage

ADMIN_DSN = os.environ.get("MTL_TUNE_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


@cache
def _unreachable_reason() -> str | None:
    try:
        psycopg.connect(ADMIN_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable ({ADMIN_DSN}): {str(exc).strip().splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip the calling test when no server answers, unless CI=true (then fail: CI must test PostgreSQL)."""
    reason = _unreachable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


@contextmanager
def fresh_database(prefix: str = "mtl_tune_test") -> Iterator[str]:
    """Create a uniquely named database, yield its ``postgresql+psycopg://`` URL, drop it afterwards."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    user = info.get("user", "postgres")
    try:
        yield f"postgresql+psycopg://{user}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        storage.dispose_engines()  # close pooled connections before dropping the database
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    with fresh_database() as url:
        yield url
