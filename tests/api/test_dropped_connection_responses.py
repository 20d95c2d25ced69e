"""A request whose database connection drops after the route ran, when its session commits, still gets an answer
(503, storage trouble): the session ends before the response starts, never after, when only a dropped HTTP
connection could tell the client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from api import views
from tests.dropped_connections import terminate_backends
from tests.pg import fresh_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_a_connection_dropped_before_the_commit_is_a_503(make_client: Callable[..., TestClient], pg_url: str) -> None:
    client = make_client(pg_url)
    assert client.get("/api/studies").status_code == 200
    real = views.study_summaries

    def then_dropped(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        assert terminate_backends(pg_url) > 0  # the request's own connection among them
        return result

    with mock.patch.object(views, "study_summaries", then_dropped):
        response = client.get("/api/studies")
    assert response.status_code == 503, response.text
    assert client.get("/api/studies").status_code == 200  # the next request is served on a new connection
