"""Alembic migrations: empty database to head, the previous revision (with data) to head, refusals."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

import storage
from storage._schema import VERSION_TABLE, _config
from tests.storage.helpers import Processes, count, rows, set_up_in_child

HEAD = "0005"
OUR_TABLES = {"study_jobs", "trial_claims", "epoch_metrics", "trial_summaries", "confirmation_runs", VERSION_TABLE}


def _tables(url: str) -> set[str]:
    with storage.get_engine(url).connect() as connection:
        return set(inspect(connection).get_table_names())


def test_empty_database_is_set_up_to_head(empty_url: str, tmp_path: Path) -> None:
    assert storage.current_revision(empty_url) is None
    assert storage.ensure_schema(empty_url) == storage.head_revision() == HEAD
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)  # Optuna's own "alembic_version" included
    assert storage.current_revision(empty_url) == HEAD
    assert storage.ensure_schema(empty_url) == HEAD  # idempotent


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
    assert storage.upgrade(empty_url) == HEAD
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)


def test_first_use_adds_optuna_tables_to_a_database_holding_only_ours(empty_url: str, tmp_path: Path) -> None:
    with storage.get_engine(empty_url).begin() as connection:
        command.upgrade(_config(connection), "head")
    assert storage.ensure_schema(empty_url) == HEAD
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
    with pytest.raises(storage.SchemaOutdated, match=rf"0001.*{HEAD}.*mtl-tune db upgrade"):
        storage.ensure_schema(empty_url)

    assert storage.upgrade(empty_url) == HEAD
    assert storage.ensure_schema(empty_url) == HEAD
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
    job_id = _old_job(empty_url, "prev")
    with storage.session_scope(empty_url) as session:
        storage.write_summary(
            session, job_id=job_id, trial_number=0, state="complete", values=[0.5], params={"a": 1},
            task_metrics={"t": {"metric": 1.0}}, duration_s=2.0, started_at=None, finished_at=None,
        )  # fmt: skip
    with pytest.raises(storage.SchemaOutdated, match=rf"0002.*{HEAD}.*mtl-tune db upgrade"):
        storage.ensure_schema(empty_url)
    assert storage.upgrade(empty_url) == HEAD
    with storage.get_engine(empty_url).connect() as connection:
        indexes = {ix["name"] for ix in inspect(connection).get_indexes("trial_summaries")}
    assert "ix_trial_summaries_job_id_duration_s" in indexes
    with storage.session_scope(empty_url) as session:
        summary = session.query(storage.TrialSummary).one()
        assert (summary.objective, summary.params, summary.duration_s) == (0.5, {"a": 1}, 2.0)


def _old_job(url: str, name: str) -> int:
    """A job row as the revisions before 0005 stored it (the ORM model has columns they lack)."""
    with storage.get_engine(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO study_jobs (study_name, problem, problem_options, objective, directions, sampler,"
                " pruner, epochs, n_trials, seed, source, status, created_at, updated_at) VALUES (:name, 'p',"
                " '{}', 'scalar', '[\"minimize\"]', 'tpe', 'median', 2, 3, 0, 'cli', 'queued',"
                " '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
            ),
            {"name": name},
        )
        return int(
            connection.execute(text("SELECT id FROM study_jobs WHERE study_name = :n"), {"n": name}).scalar_one()
        )


def test_confirmation_columns_come_and_go_keeping_every_row_that_refers_to_a_job(empty_url: str) -> None:
    assert storage.upgrade(empty_url, "0004") == "0004"
    job_id = _old_job(empty_url, "kept")
    with storage.session_scope(empty_url) as session:
        storage.write_epoch(session, job_id=job_id, trial_number=0, epoch=0, rows=rows("a"))
    assert storage.upgrade(empty_url) == HEAD
    with storage.session_scope(empty_url) as session:
        job = storage.get_job(session, "kept")
        assert (job.confirm_seeds, job.confirm_top, job.confirm_pending) == (3, 1, False)
    assert _metric_rows(empty_url) == 1  # a table copy of study_jobs would have cascaded them away
    with storage.get_engine(empty_url).begin() as connection:
        command.downgrade(_config(connection), "0004")
    assert "confirm_seeds" not in _columns(empty_url, "study_jobs") and "confirmation_runs" not in _tables(empty_url)
    assert _metric_rows(empty_url) == 1


def _metric_rows(url: str) -> int:
    with storage.get_engine(url).connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM epoch_metrics")).scalar_one())


def _columns(url: str, table: str) -> set[str]:
    with storage.get_engine(url).connect() as connection:
        return {c["name"] for c in inspect(connection).get_columns(table)}


def test_sigma_and_grad_norm_columns_move_into_series_and_back(empty_url: str) -> None:
    assert storage.upgrade(empty_url, "0003") == "0003"
    job_id = _old_job(empty_url, "old")
    before = [  # (task, sigma, grad_norm) as revision 0003 stored them
        ("both", 0.5, 2.0),
        ("sigma", 1.5, None),
        ("grad_norm", None, 0.25),
        ("neither", None, None),
        ("diverged", float("inf"), 3.0),
    ]
    with storage.get_engine(empty_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO epoch_metrics (job_id, trial_number, epoch, task, train_loss, val_loss, metric, weight,"
                " sigma, grad_norm) VALUES (:job_id, 0, 0, :task, 1.0, 0.5, 0.9, 1.0, :sigma, :grad_norm)"
            ),
            [{"job_id": job_id, "task": t, "sigma": s, "grad_norm": g} for t, s, g in before],
        )

    assert storage.upgrade(empty_url) == HEAD
    assert {"sigma", "grad_norm"}.isdisjoint(_columns(empty_url, "epoch_metrics"))
    with storage.session_scope(empty_url) as session:
        stored = {m.task: (m.weight, m.series) for m in storage.trial_curves(session, job_id=job_id, trial_number=0)}
    assert stored == {
        "both": (1.0, {"sigma": 0.5, "grad_norm": 2.0}),
        "sigma": (1.0, {"sigma": 1.5}),
        "grad_norm": (1.0, {"grad_norm": 0.25}),
        "neither": (1.0, None),
        "diverged": (1.0, {"sigma": None, "grad_norm": 3.0}),  # JSON has no infinity
    }
    # The table kept its constraints through the change: one row per task and epoch, deleted with its study.
    with pytest.raises(IntegrityError), storage.session_scope(empty_url) as session:
        storage.write_epoch(session, job_id=job_id, trial_number=0, epoch=0, rows=rows("both"))
    with storage.session_scope(empty_url) as session:
        storage.write_epoch(session, job_id=job_id, trial_number=0, epoch=1, rows=rows("both", series={"cos": 0.1}))

    with storage.get_engine(empty_url).begin() as connection:
        command.downgrade(_config(connection), "0003")
    assert "series" not in _columns(empty_url, "epoch_metrics")
    with storage.get_engine(empty_url).connect() as connection:
        restored = connection.execute(
            text("SELECT epoch, task, sigma, grad_norm FROM epoch_metrics ORDER BY epoch, task")
        ).all()
    assert [tuple(r) for r in restored] == [
        (0, "both", 0.5, 2.0),
        (0, "diverged", None, 3.0),
        (0, "grad_norm", None, 0.25),
        (0, "neither", None, None),
        (0, "sigma", 1.5, None),
        (1, "both", None, None),  # a series without a column of its own has nowhere to go
    ]
    assert storage.upgrade(empty_url) == HEAD
    with storage.session_scope(empty_url) as session:
        session.delete(storage.get_job(session, "old"))
    with storage.session_scope(empty_url) as session:
        assert count(session, storage.EpochMetric) == 0


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
    assert storage.upgrade(empty_url) == HEAD


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
    assert results == [HEAD] * 4
    assert storage.current_revision(empty_url) == HEAD
    assert _tables(empty_url) == OUR_TABLES | _optuna_tables(tmp_path)


def test_sqlite_sets_up_under_a_lock_file_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    try:
        storage.ensure_schema(url)
    finally:
        storage.dispose_engines()
    assert (tmp_path / "studies.db-schema.lock").exists()
