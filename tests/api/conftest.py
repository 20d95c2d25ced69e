"""Fixtures for the REST API: apps over fresh databases (SQLite and PostgreSQL) and studies with finished trials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from tests.api.helpers import BACKENDS, client_for, database, run_study
from tests.plugins import plugin_dir
from tests.study.helpers import QUICK_SPACE

__all__ = ["plugin_dir"]


@dataclass
class Seeded:
    """A database holding a finished scalar study and a finished pareto study."""

    url: str
    scalar: str
    pareto: str


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with database(request.param, tmp_path_factory.mktemp("seeded")) as url:
        scalar = run_study(url, name="scalar", n_trials=7, sampler="random", pruner="none", space=QUICK_SPACE)
        pareto = run_study(url, name="pareto", n_trials=6, sampler="random", objective="pareto")
        yield Seeded(url, scalar, pareto)


@pytest.fixture(scope="module")
def seeded_client(seeded: Seeded) -> Iterator[TestClient]:
    with client_for(seeded.url) as client:
        yield client


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app over an empty SQLite database for a whole module: for requests that must not change anything."""
    with database("sqlite", tmp_path_factory.mktemp("shared")) as url, client_for(url) as client:
        yield client


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend."""
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(url, **settings)``: a started app; closed after the test."""
    clients: list[TestClient] = []

    def make(url: str, **settings: Any) -> TestClient:
        settings.setdefault("data_dir", tmp_path / "data")
        client = TestClient(create_app(Settings(storage=url, **settings)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], url: str) -> TestClient:
    """An app over an empty database, on each backend."""
    return make_client(url)


@pytest.fixture
def sqlite_client(make_client: Callable[..., TestClient], sqlite_url: str) -> TestClient:
    """An app over an empty SQLite database, for behaviour that does not depend on the backend."""
    return make_client(sqlite_url)
