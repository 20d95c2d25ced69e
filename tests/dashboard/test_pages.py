"""The dashboard's pages and assets as served, without a browser."""

from __future__ import annotations

import re
from typing import get_args

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.routers import pages
from api.schemas import Objective, PrunerName, SamplerName


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(pages.router)
    return TestClient(app)


@pytest.mark.parametrize(
    ("url", "marker"),
    [
        ("/", 'src="http://testserver/static/studies.js"'),
        ("/studies/demo-1", 'data-study="demo-1"'),
        ("/studies/demo-1/trials/3", 'data-trial="3"'),
    ],
)
def test_pages_are_shells_that_load_their_module(client: TestClient, url: str, marker: str) -> None:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text
    assert 'data-api="/api"' in response.text


def test_study_pages_load_plotly_from_this_server(client: TestClient) -> None:
    html = client.get("/studies/demo").text
    assert "/static/vendor/plotly.min.js?v=" in html
    assert "cdn" not in html.lower()


def test_plotly_comes_from_the_installed_python_package(client: TestClient) -> None:
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert len(response.content) > 1_000_000
    assert "max-age" in response.headers["cache-control"]


@pytest.mark.parametrize("asset", ["api.js", "study.js", "trial.js", "traces.js", "verdict.js", "dashboard.css"])
def test_own_assets_are_served_and_revalidated(client: TestClient, asset: str) -> None:
    response = client.get(f"/static/{asset}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    again = client.get(f"/static/{asset}", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "url", ["/static/../routers/pages.py", "/static/%2e%2e/templates/base.html", "/static/nope.js"]
)
def test_nothing_outside_the_static_directory_is_served(client: TestClient, url: str) -> None:
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("url", ["/studies/bad%20name", "/studies/demo/trials/-1", "/studies/demo/trials/x"])
def test_bad_path_parameters_are_refused(client: TestClient, url: str) -> None:
    assert client.get(url).status_code in (404, 422)


def test_names_are_escaped_into_the_page() -> None:
    # The route's name pattern already refuses markup; the template escapes whatever it is given anyway.
    html = pages.templates.get_template("study.html").render(
        study_name='"><script>', api_base="/api", plotly_version="0", url_for=lambda *a, **k: "/"
    )
    assert '"><script>' not in html
    assert "&#34;&gt;&lt;script&gt;" in html


@pytest.mark.parametrize(
    ("field", "choices"), [("objective", Objective), ("sampler", SamplerName), ("pruner", PrunerName)]
)
def test_the_launch_form_offers_every_choice_the_api_takes(client: TestClient, field: str, choices: object) -> None:
    page = client.get("/").text
    select = re.search(rf'<select name="{field}">(.*?)</select>', page, re.S)
    assert select is not None
    options = re.finditer(r'<option( value="([^"]*)")?>([^<]*)<', select.group(1))
    offered = {m.group(2) if m.group(1) else m.group(3) for m in options}
    assert offered - {""} == set(get_args(choices))  # "": the server's default
