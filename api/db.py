"""The database behind the API: checked once per URL (Optuna's tables and ours created, ours at head)."""

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
        _ready.add(url)
