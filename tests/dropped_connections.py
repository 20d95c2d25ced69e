"""Dropping every connection to a test's PostgreSQL database, as an administrator, a restarted pooler or a
firewall does: ``terminate_backends(url)``."""

from __future__ import annotations

import psycopg

from tests.pg import ADMIN_DSN

TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def terminate_backends(url: str, admin: psycopg.Connection | None = None) -> int:
    """Terminate every backend connected to ``url``'s database (``admin``'s own aside); returns how many."""
    if admin is not None:
        return len(admin.execute(TERMINATE, (database_of(url),)).fetchall())
    with psycopg.connect(ADMIN_DSN, autocommit=True) as own:
        return terminate_backends(url, own)
