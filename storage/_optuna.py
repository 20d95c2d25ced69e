"""Optuna's RDB storage over the same URL, with heartbeats and retry of trials whose worker died."""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from storage._engine import engine_kwargs, ping_when_idle, translate_errors
from storage._schema import create_missing
from storage._url import is_sqlite, normalize_url

if TYPE_CHECKING:
    from storage._batched import BatchedRDBStorage

# How often Optuna re-runs a trial whose worker stopped sending heartbeats before giving up on it.
MAX_RETRY = 3

_storages: dict[tuple[str, int, int | None], BatchedRDBStorage] = {}
_lock = threading.Lock()


def optuna_storage(url: str, *, heartbeat_interval: int = 30, grace_period: int | None = None) -> BatchedRDBStorage:
    """Optuna's ``RDBStorage`` for ``url``, cached per (URL, heartbeat settings).

    It is a ``BatchedRDBStorage``: a plain ``RDBStorage`` except for the trials a worker holds, whose writes
    join the worker's per-epoch transactions (see ``storage._batched``).

    A running trial whose heartbeat is older than ``grace_period`` (default ``2 * heartbeat_interval``) is
    failed by the next ``ask`` and re-enqueued with the same parameters
    (``RetryHeartbeatStaleTrialCallback``, Optuna 5's name for the former ``RetryFailedTrialCallback``).
    """
    url = normalize_url(url)
    key = (url, heartbeat_interval, grace_period)
    with _lock:
        storage = _storages.get(key)
        if storage is None:
            storage = _storages[key] = _create(url, heartbeat_interval, grace_period)
    return storage


def clear_optuna_storages() -> None:
    with _lock:
        storages = list(_storages.values())
        _storages.clear()
    for storage in storages:
        storage.engine.dispose()


def _create(url: str, heartbeat_interval: int, grace_period: int | None) -> BatchedRDBStorage:
    import optuna

    from storage._batched import BatchedRDBStorage

    # Our engine connects first: an unreachable server is reported as StorageUnavailable and, on SQLite, the
    # file is switched to WAL (a persistent setting Optuna's own connections then share). Optuna's tables are
    # created there too, once across processes, so this storage never creates them.
    create_missing(url)
    with translate_errors(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = BatchedRDBStorage(
            url,
            engine_kwargs=engine_kwargs(url),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            skip_table_creation=True,
        )
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
