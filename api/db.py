"""The database behind the API: set up once per URL (our tables at head, Optuna's created), then sessions."""

from __future__ import annotations

import threading

import storage

_ready: set[str] = set()
_lock = threading.Lock()


def ensure_ready(url: str) -> None:
    """Create mtl-tune's and Optuna's tables in an empty database; refuse an outdated one (``SchemaOutdated``).

    Retried on the next request while the database is unreachable, a no-op once it succeeded.
    """
    if url in _ready:
        return
    with _lock:
        if url in _ready:
            return
        storage.ensure_schema(url)
        storage.optuna_storage(url)  # Optuna creates its tables, so read queries on them always find them
        _ready.add(url)
