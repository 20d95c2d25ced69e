"""Optuna's RDB storage over the same URL, and a worker's storage wrapping it (``storage._worker_storage``)."""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from storage._engine import engine_kwargs, is_sqlite, normalize_url, ping_when_idle, translate_errors
from storage._schema import create_missing

if TYPE_CHECKING:
    import optuna

    from storage._worker_storage import WorkerStorage

# How often a trial whose worker was lost is run again before giving up on its parameters.
MAX_RETRY = 3

_storages: dict[str, optuna.storages.RDBStorage] = {}
_worker_storages: dict[str, WorkerStorage] = {}
_lock = threading.Lock()


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's own ``RDBStorage`` for ``url``, one per URL and process."""
    url = normalize_url(url)
    with _lock:
        rdb = _storages.get(url)
        if rdb is None:
            rdb = _storages[url] = _create(url)
    return rdb


def worker_storage(url: str) -> WorkerStorage:
    """What a worker runs its trials on: ``optuna_storage(url)`` wrapped, with the trials it runs held (see
    ``storage._worker_storage``); refused when Optuna's tables are of a schema version mtl-tune does not know."""
    from storage._worker_storage import WorkerStorage

    url = normalize_url(url)
    rdb = optuna_storage(url)
    with _lock:
        wrapped = _worker_storages.get(url)
        if wrapped is None:
            wrapped = _worker_storages[url] = WorkerStorage(url, rdb)
    return wrapped


def clear_optuna_storages() -> None:
    with _lock:
        storages = list(_storages.values())
        _storages.clear()
        _worker_storages.clear()
    for rdb in storages:
        rdb.engine.dispose()


def _create(url: str) -> optuna.storages.RDBStorage:
    import optuna

    # Our engine connects first: an unreachable server is reported as StorageUnavailable and, on SQLite, the
    # file is switched to WAL (a persistent setting Optuna's own connections then share). Optuna's tables are
    # created there too, once across processes, so this storage never creates them.
    create_missing(url)
    with translate_errors(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), skip_table_creation=True)
    if is_sqlite(url):
        # Optuna's connections keep pysqlite's own transaction handling; they only get the durability setting.
        event.listen(rdb.engine, "connect", _sqlite_synchronous_normal)
        rdb.engine.dispose()
    else:
        ping_when_idle(rdb.engine)
    return rdb


def _sqlite_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
