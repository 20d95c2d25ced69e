"""Alembic migrations: empty database to head, the previous revision (with data) to head, refusals."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from alembic import command
from sqlalchemy import inspect, text

import storage
from storage._schema import VERSION_TABLE, _config
from tests.storage.helpers import Processes, rows, set_up_in_child

OUR_TABLES = {"study_jobs", "trial_claims", "epoch_metrics", "trial_summaries", VERSION_TABLE}


def _tables(url: str) -> set[str]:
    with storage.get_engine(url).connect() as connection:
        return set(inspect(connection).get_table_names())


def test_empty_database_is_set_up_to_head(empty_url: str, tmp_path: Path) -> None:
    assert storage.current_revision(empty_url) is None
    assert storage.ensure_schema(empty_url) == storage.head_revision() == "0003"
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)  # Optuna's own "alembic_version" included
    assert storage.current_revision(empty_url) == "0003"
    assert storage.ensure_schema(empty_url) == "0003"  # idempotent


def _optuna_tables(tmp_path: Path) -> set[str]:
    """The tables of a database Optuna set up by itself."""
    url = f"sqlite:///{tmp_path / 'optuna-only.db'}"
    optuna.storages.RDBStorage(url).engine.dispose()
    tables = _tables(url)
    assert {"alembic_version", "studies", "trials"} <= tables
    return tables


def test_db_upgrade_adds_optuna_tables_to_a_database_holding_only_ours(empty_url: str, tmp_path: Path) -> None:
    # What `mtl-tune db upgrade` used to leave: mtl-tune's tables at head, Optuna's created on first use.
    with storage.get_engine(empty_url).begin() as connection:
        command.upgrade(_config(connection), "head")
    assert _tables(empty_url) == OUR_TABLES
    assert storage.upgrade(empty_url) == "0003"
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)


def test_first_use_adds_optuna_tables_to_a_database_holding_only_ours(empty_url: str, tmp_path: Path) -> None:
    with storage.get_engine(empty_url).begin() as connection:
        command.upgrade(_config(connection), "head")
    assert storage.ensure_schema(empty_url) == "0003"
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)


def test_previous_revision_with_data_upgrades_to_head(empty_url: str) -> None:
    assert storage.upgrade(empty_url, "0001") == "0001"
    assert "trial_summaries" not in _tables(empty_url)
    with storage.get_engine(empty_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO study_jobs (study_name, problem, problem_options, objective, directions, sampler,"
                " pruner, epochs, n_trials, seed, source, status, created_at, updated_at) VALUES ('old', 'p',"
                " '{}', 'scalar', '[\"minimize\"]', 'tpe', 'median', 3, 4, 0, 'cli', 'running',"
                " '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
            )
        )
    with pytest.raises(storage.SchemaOutdated, match=r"0001.*0003.*mtl-tune db upgrade"):
        storage.ensure_schema(empty_url)

    assert storage.upgrade(empty_url) == "0003"
    assert storage.ensure_schema(empty_url) == "0003"
    with storage.session_scope(empty_url) as session:
        job = storage.get_job(session, "old")
        assert (job.status, job.n_trials, job.directions) == ("running", 4, ["minimize"])
        assert job.created_at.tzinfo is not None
        storage.write_epoch(session, job_id=job.id, trial_number=0, epoch=0, rows=rows("a"))
        storage.write_summary(
            session, job_id=job.id, trial_number=0, state="complete", values=[1.0], params={}, task_metrics={},
            duration_s=None, started_at=None, finished_at=None,
        )  # fmt: skip


def test_the_previous_revision_upgrades_to_head_keeping_its_summaries(empty_url: str) -> None:
    assert storage.upgrade(empty_url, "0002") == "0002"
    with storage.session_scope(empty_url) as session:
        job = storage.create_job(
            session, study_name="prev", problem="p", problem_options={}, space=None, objective="scalar",
            directions=["minimize"], sampler="tpe", pruner="median", epochs=2, n_trials=3, seed=0, source="cli",
        )  # fmt: skip
        storage.write_summary(
            session, job_id=job.id, trial_number=0, state="complete", values=[0.5], params={"a": 1},
            task_metrics={"t": {"metric": 1.0}}, duration_s=2.0, started_at=None, finished_at=None,
        )  # fmt: skip
    with pytest.raises(storage.SchemaOutdated, match=r"0002.*0003.*mtl-tune db upgrade"):
        storage.ensure_schema(empty_url)
    assert storage.upgrade(empty_url) == "0003"
    with storage.get_engine(empty_url).connect() as connection:
        indexes = {ix["name"] for ix in inspect(connection).get_indexes("trial_summaries")}
    assert "ix_trial_summaries_job_id_duration_s" in indexes
    with storage.session_scope(empty_url) as session:
        summary = session.query(storage.TrialSummary).one()
        assert (summary.objective, summary.params, summary.duration_s) == (0.5, {"a": 1}, 2.0)


def test_migrations_leave_optuna_tables_alone(empty_url: str) -> None:
    # A database Optuna set up before mtl-tune met it: its tables and its own alembic_version.
    optuna.storages.RDBStorage(storage.normalize_url(empty_url)).engine.dispose()
    optuna_tables = _tables(empty_url)
    assert "alembic_version" in optuna_tables and "trials" in optuna_tables
    storage.ensure_schema(empty_url)
    assert _tables(empty_url) == optuna_tables | OUR_TABLES
    with storage.get_engine(empty_url).begin() as connection:
        command.downgrade(_config(connection), "base")
    assert _tables(empty_url) == optuna_tables | {VERSION_TABLE}
    assert storage.upgrade(empty_url) == "0003"


def test_a_newer_revision_is_refused(storage_url: str) -> None:
    with storage.get_engine(storage_url).begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(storage.StorageError, match=r"9999.*newer"):
        storage.ensure_schema(storage_url)


def test_unversioned_tables_are_refused(storage_url: str) -> None:
    with storage.get_engine(storage_url).begin() as connection:
        connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    with pytest.raises(storage.StorageError, match="no revision"):
        storage.ensure_schema(storage_url)


def test_concurrent_first_starts_set_up_once(empty_url: str, processes: Processes, tmp_path: Path) -> None:
    # Each child sets the database up its own way: ensure_schema, Optuna's storage, `db upgrade`.
    results = processes.run(set_up_in_child, [(empty_url, how) for how in ("ensure", "optuna", "upgrade", "optuna")])
    assert results == ["0003"] * 4
    assert storage.current_revision(empty_url) == "0003"
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)


def test_sqlite_sets_up_under_a_lock_file_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    try:
        storage.ensure_schema(url)
    finally:
        storage.dispose_engines()
    assert (tmp_path / "studies.db-schema.lock").exists()
