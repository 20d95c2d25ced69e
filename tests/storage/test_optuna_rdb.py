"""Optuna's RDB storage on the same database: heartbeat on, stale trials retried, tables side by side."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import inspect

import storage


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_optuna_storage_is_cached_with_heartbeat_and_retry(storage_url: str) -> None:
    rdb = storage.optuna_storage(storage_url)
    assert storage.optuna_storage(storage_url) is rdb
    assert storage.optuna_storage(storage_url, heartbeat_interval=5) is not rdb
    assert rdb.heartbeat_interval == 30 and rdb.grace_period is None
    assert isinstance(rdb.heartbeat_stale_trial_callback, optuna.storages.RetryHeartbeatStaleTrialCallback)


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


def test_a_stale_trial_fails_and_is_retried(storage_url: str) -> None:
    rdb = storage.optuna_storage(storage_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="stale", storage=rdb)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    rdb.record_heartbeat(trial._trial_id)  # a worker that beat once, then died
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[1].params == {"x": trial.params["x"]}
