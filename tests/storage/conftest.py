"""Backend fixtures: the contract tests run once against a SQLite file and once against a fresh PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import storage
from tests.pg import fresh_database
from tests.storage.helpers import JOB_DEFAULTS, Processes


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'storage.db'}"
    storage.dispose_engines()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def empty_url(backend_url: str) -> str:
    """An empty database on each backend."""
    return backend_url


@pytest.fixture
def storage_url(empty_url: str) -> str:
    """A database on each backend with mtl-tune's tables at head."""
    storage.ensure_schema(empty_url)
    return empty_url


@pytest.fixture
def make_job(storage_url: str) -> Callable[..., storage.StudyJob]:
    """Create a job (``JOB_DEFAULTS``, overridable) in its own committed transaction."""

    def make(study_name: str = "study", **overrides: Any) -> storage.StudyJob:
        with storage.session_scope(storage_url) as session:
            return storage.create_job(session, study_name=study_name, **(JOB_DEFAULTS | overrides))

    return make


@pytest.fixture(scope="session")
def processes() -> Iterator[Processes]:
    pool = Processes()
    yield pool
    pool.close()
