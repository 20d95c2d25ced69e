"""URLs, the per-URL engine cache, SQLite pragmas, PostgreSQL pool settings, session scope and error translation."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, func, make_url, select, text

import storage
from tests.pg import ADMIN_DSN
from tests.storage.helpers import JOB_DEFAULTS

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nothing"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u:pw@h:5433/db", "postgresql+psycopg://u:pw@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///mtl-tune.db", "sqlite:///mtl-tune.db"),
    ],
)
def test_normalize_url_picks_psycopg(url: str, expected: str) -> None:
    assert storage.normalize_url(url) == expected


@pytest.mark.parametrize("url", ["not a url", "mysql://u@h/db", ""])
def test_normalize_url_rejects_what_it_cannot_use(url: str) -> None:
    with pytest.raises(storage.StorageError, match="invalid storage URL"):
        storage.normalize_url(url)


def test_default_url_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTL_TUNE_STORAGE", raising=False)
    assert storage.default_url() == "sqlite:///mtl-tune.db"
    monkeypatch.setenv("MTL_TUNE_STORAGE", "postgresql://u@h/db")
    assert storage.default_url() == "postgresql://u@h/db"


def test_redact_hides_the_password() -> None:
    assert storage.redact("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"


def test_one_engine_per_url(sqlite_url: str) -> None:
    engine = storage.get_engine(sqlite_url)
    assert storage.get_engine(sqlite_url) is engine
    assert storage.get_engine("postgres://u@h/db") is storage.get_engine("postgresql+psycopg://u@h/db")
    storage.dispose_engines()
    assert storage.get_engine(sqlite_url) is not engine


def test_sqlite_pragmas(sqlite_url: str) -> None:
    with storage.get_engine(sqlite_url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_postgresql_pool_settings() -> None:
    engine = storage.get_engine("postgresql://u@db.invalid/x")  # no connection is made
    assert engine.dialect.driver == "psycopg"
    assert engine.pool.size() == 5  # type: ignore[attr-defined]
    assert engine.pool._max_overflow == 5  # type: ignore[attr-defined]
    assert engine.pool._recycle > 0
    storage.dispose_engines()


def _pings(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> list[object]:
    """Records the pings the engine's dialect sends."""
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_back_in_the_pool_a_moment_ago_is_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = storage.get_engine(pg_url)
    pings = _pings(monkeypatch, engine)
    for _ in range(5):
        with engine.connect() as connection:
            connection.execute(select(1))
    assert pings == []
    monkeypatch.setattr(storage._engine, "PING_AFTER_IDLE_S", 0.0)
    with engine.connect() as connection:
        connection.execute(select(1))
    assert len(pings) == 1


def test_a_connection_killed_while_idle_is_replaced_before_use(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = storage.get_engine(pg_url)
    with engine.connect() as connection:
        old_pid = connection.execute(select(func.pg_backend_pid())).scalar_one()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
    monkeypatch.setattr(storage._engine, "PING_AFTER_IDLE_S", 0.0)  # the connection has now been idle long enough
    pings = _pings(monkeypatch, engine)
    with engine.connect() as connection:  # the ping finds it dead: a new connection, no error
        new_pid = connection.execute(select(func.pg_backend_pid())).scalar_one()
    assert new_pid != old_pid
    assert len(pings) == 1


def test_session_scope_commits_or_rolls_back(storage_url: str) -> None:
    with pytest.raises(RuntimeError), storage.session_scope(storage_url) as session:
        storage.create_job(session, study_name="rolled-back", **JOB_DEFAULTS)
        raise RuntimeError("boom")
    with storage.session_scope(storage_url) as session:
        storage.create_job(session, study_name="kept", **JOB_DEFAULTS)
    with storage.session_scope(storage_url) as session:
        jobs = storage.list_jobs(session)
    # Objects stay readable after their scope closed.
    assert [job.study_name for job in jobs] == ["kept"]


def test_unreachable_postgresql_is_storage_unavailable() -> None:
    with pytest.raises(storage.StorageUnavailable, match=r"127\.0\.0\.1:1"), storage.session_scope(UNREACHABLE) as s:
        s.execute(select(1))
    with pytest.raises(storage.StorageUnavailable):
        storage.ensure_schema(UNREACHABLE)
    with pytest.raises(storage.StorageUnavailable):
        storage.claim_slot(UNREACHABLE, study_name="s", worker="w", grace_seconds=60)
    with pytest.raises(storage.StorageUnavailable):
        storage.optuna_storage(UNREACHABLE)
    storage.dispose_engines()


def test_unopenable_sqlite_file_is_storage_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    with pytest.raises(storage.StorageUnavailable), storage.session_scope(url) as session:
        session.execute(text("SELECT 1"))
    storage.dispose_engines()


@pytest.mark.postgres
def test_killed_connections_are_unavailable_then_replaced(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def terminate_others() -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (make_url(pg_url).database,),
            )

    with storage.session_scope(pg_url) as session:
        session.execute(select(1))
    terminate_others()  # dies a moment after it was used: not pinged, its next statement fails
    with pytest.raises(storage.StorageUnavailable), storage.session_scope(pg_url) as session:
        session.execute(select(1))
    with storage.session_scope(pg_url) as session:  # SQLAlchemy replaced it
        assert session.scalar(select(1)) == 1
    monkeypatch.setattr(storage._engine, "PING_AFTER_IDLE_S", 0.0)
    terminate_others()  # an idle pooled connection dies: the ping at checkout replaces it
    with storage.session_scope(pg_url) as session:
        assert session.scalar(select(1)) == 1
    with pytest.raises(storage.StorageUnavailable), storage.session_scope(pg_url) as session:
        session.execute(select(1))
        terminate_others()  # dies in the middle of a transaction
        session.execute(select(1))
    with storage.session_scope(pg_url) as session:
        assert session.scalar(select(1)) == 1
