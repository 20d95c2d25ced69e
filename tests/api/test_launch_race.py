"""Launches of one name racing on PostgreSQL: exactly one is created, every other one is told the name is taken."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import optuna
import pytest

import storage
from api.main import create_app
from api.settings import Settings
from tests.api.helpers import launch_body
from tests.pg import fresh_database

pytestmark = pytest.mark.postgres

CONCURRENT = 50


async def _race(url: str, names: list[str]) -> list[Counter[int]]:
    app = create_app(Settings(storage=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            rounds = []
            for name in names:
                posts = [client.post("/api/studies", json=launch_body(name=name)) for _ in range(CONCURRENT)]
                rounds.append(Counter(r.status_code for r in await asyncio.gather(*posts)))
            return rounds


def test_concurrent_launches_of_one_name_give_one_201_and_409s() -> None:
    names = ["same-0", "same-1"]
    with fresh_database("mtl_tune_race") as url:  # dropped afterwards, whatever happens here
        rounds = asyncio.run(_race(url, names))
        assert sorted(optuna.get_all_study_names(storage.optuna_storage(url))) == names
        with storage.session_scope(url) as session:
            assert sorted(job.study_name for job in storage.list_jobs(session)) == names
    assert rounds == [Counter({201: 1, 409: CONCURRENT - 1})] * len(names)
