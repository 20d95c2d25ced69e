"""Optuna's RDB storage on the same database, tables side by side; a worker's storage wraps it and knows Optuna's
schema version."""

from __future__ import annotations

from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import inspect

import storage
from storage._worker_storage import WorkerStorage


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_optuna_storage_and_the_worker_storage_are_cached(storage_url: str) -> None:
    rdb = storage.optuna_storage(storage_url)
    assert storage.optuna_storage(storage_url) is rdb
    assert storage.worker_storage(storage_url) is storage.worker_storage(storage_url)
    assert storage.worker_storage(storage_url).rdb is rdb


def test_a_worker_refuses_optuna_tables_of_an_unknown_schema_version(storage_url: str) -> None:
    unknown = mock.patch.object(optuna.storages.RDBStorage, "get_current_version", return_value="v9.9.9.z")
    with unknown, pytest.raises(storage.StorageError, match=r"schema version 'v9\.9\.9\.z'.*v3\.2\.0\.a"):
        WorkerStorage(storage_url, storage.optuna_storage(storage_url))


def test_studies_run_beside_our_tables(storage_url: str) -> None:
    rdb = storage.optuna_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=rdb)
    study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=3)
    loaded = optuna.load_study(study_name="s", storage=storage.optuna_storage(storage_url))
    assert [t.state for t in loaded.trials] == [TrialState.COMPLETE] * 3
    # A plain Optuna URL reads the same study: the storage is Optuna's own.
    assert len(optuna.load_study(study_name="s", storage=storage.normalize_url(storage_url)).trials) == 3

    with storage.get_engine(storage_url).connect() as connection:
        tables = set(inspect(connection).get_table_names())
    assert {"studies", "trials", "alembic_version", "study_jobs", "mtl_tune_alembic_version"} <= tables
    assert storage.ensure_schema(storage_url) == storage.head_revision()
