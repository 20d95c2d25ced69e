"""The API token on mutating routes (bearer header or the dashboard's cookie), same-origin JSON changes, trusted
hosts, the body size limit, and 503 when the storage is unreachable (naming no host, user or path)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import storage
from api import workers
from api.auth import trusted_hosts
from api.main import create_app
from api.settings import Settings
from api.workers import WorkerPool
from tests.api.helpers import client_for, database, launch_body

TOKEN = "s3cret-token"
MUTATIONS = [
    ("POST", "/api/studies", launch_body(name="new")),
    ("POST", "/api/studies/guarded/trials", {"params": {"lr_shared": 0.01}}),
    ("POST", "/api/studies/guarded/stop", {}),
    ("POST", "/api/studies/guarded/resume", {}),
    ("DELETE", "/api/studies/guarded", None),
]
READS = [
    "/api/health", "/api/problems", "/api/studies", "/api/studies/guarded", "/api/studies/guarded/trials",
    "/api/studies/guarded/trials/0", "/api/studies/guarded/history", "/api/studies/guarded/importance",
]  # fmt: skip
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(make_client: Callable[..., TestClient], sqlite_url: str) -> TestClient:
    client = make_client(sqlite_url, api_token=TOKEN)
    created = client.post("/api/studies", json=launch_body(name="guarded"), headers=AUTHORIZED)
    assert created.status_code == 201
    return client


@pytest.fixture(scope="module")
def guarded_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """``guarded`` for a whole module, for requests that change nothing."""
    with database("sqlite", tmp_path_factory.mktemp("guarded")) as url, client_for(url, api_token=TOKEN) as client:
        assert client.post("/api/studies", json=launch_body(name="guarded"), headers=AUTHORIZED).status_code == 201
        yield client


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer ", f"Bearer {TOKEN}x"])
def test_mutations_without_the_token_are_401(
    guarded_shared: TestClient, method: str, path: str, body: object, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = guarded_shared.request(method, path, json=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    study = guarded_shared.get("/api/studies/guarded").json()
    assert (study["status"], study["n_trials"]) == ("queued", 3)  # nothing changed
    assert [s["name"] for s in guarded_shared.get("/api/studies").json()["studies"]] == ["guarded"]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_mutations_with_the_token_succeed(guarded: TestClient, method: str, path: str, body: object) -> None:
    response = guarded.request(method, path, json=body, headers=AUTHORIZED)
    assert response.status_code in (200, 201, 202, 204), response.text


@pytest.mark.parametrize("path", READS)
def test_reads_stay_open(guarded_shared: TestClient, path: str) -> None:
    assert guarded_shared.get(path).status_code == 200


def test_without_a_configured_token_mutations_are_open(sqlite_client: TestClient) -> None:
    assert sqlite_client.post("/api/studies", json=launch_body()).status_code == 201


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    from api.settings import Settings

    monkeypatch.setenv("MTL_TUNE_API_TOKEN", TOKEN)
    monkeypatch.setenv("MTL_TUNE_STORAGE", sqlite_url)
    settings = Settings()
    assert settings.api_token is not None and settings.api_token.get_secret_value() == TOKEN
    assert settings.storage == sqlite_url
    assert TOKEN not in repr(settings)


def test_oversized_body_is_413(make_client: Callable[..., TestClient], sqlite_url: str) -> None:
    client = make_client(sqlite_url, max_body_bytes=2000)
    body = launch_body(space={"strategy": ["equal"] * 500})
    response = client.post("/api/studies", json=body)
    assert response.status_code == 413
    assert "2000" in response.json()["detail"]


def test_oversized_streamed_body_is_413(make_client: Callable[..., TestClient], sqlite_url: str) -> None:
    client = make_client(sqlite_url, max_body_bytes=2000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body arrives in pieces
        yield b'{"problem": "uncertainty-toy", "space": {"strategy": ['
        for _ in range(300):
            yield b'"equal",'
        yield b'"equal"]}}'

    response = client.post("/api/studies", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


UNREACHABLE = ["sqlite:////nonexistent-dir/mtl-tune.db", "postgresql+psycopg://postgres@127.0.0.1:1/nothing"]


@pytest.fixture(params=UNREACHABLE, ids=["sqlite", "postgresql"])
def unreachable(make_client: Callable[..., TestClient], request: pytest.FixtureRequest) -> Iterator[TestClient]:
    yield make_client(request.param)
    storage.dispose_engines()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/studies", None),
        ("GET", "/api/studies/x", None),
        ("GET", "/api/studies/x/trials", None),
        ("GET", "/api/studies/x/trials/0", None),
        ("GET", "/api/studies/x/history", None),
        ("GET", "/api/studies/x/importance", None),
        ("POST", "/api/studies", launch_body()),
        ("POST", "/api/studies/x/trials", {"params": {"lr_shared": 0.01}}),
        ("POST", "/api/studies/x/stop", {}),
        ("DELETE", "/api/studies/x", None),
    ],
)
def test_unreachable_storage_is_503(unreachable: TestClient, method: str, path: str, body: object) -> None:
    response = unreachable.request(method, path, json=body)
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "unavailable" in detail
    for secret in ("127.0.0.1", "postgres", "nothing", "nonexistent-dir", "/"):  # host, user, database, path
        assert secret not in detail


def test_health_reports_an_unreachable_storage(unreachable: TestClient) -> None:
    health = unreachable.get("/api/health").json()
    assert health["status"] == "degraded" and health["storage"] is False and health["schema_revision"] is None


def test_health(sqlite_client: TestClient) -> None:
    assert sqlite_client.get("/api/health").json() == {
        "status": "ok", "storage": True, "schema_revision": storage.head_revision(),
        "head_revision": storage.head_revision(), "workers_alive": 0, "local_workers_expected": 0,
        "local_workers_alive": 0,
    }  # fmt: skip


class Unstartable(WorkerPool):
    def command(self, slot: workers._Slot) -> list[str]:
        return ["/nonexistent/mtl-tune-worker"]


def test_health_is_degraded_while_a_supervised_worker_is_not_running(sqlite_url: str) -> None:
    app = create_app(Settings(storage=sqlite_url))
    app.state.worker_pool = Unstartable(sqlite_url, count=2)
    with TestClient(app) as client:
        health = client.get("/api/health").json()
    assert health["status"] == "degraded" and health["storage"] is True
    assert (health["local_workers_expected"], health["local_workers_alive"]) == (2, 0)


def test_an_outdated_schema_refuses_to_start(tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    storage.upgrade(url, "0001")
    with pytest.raises(storage.SchemaOutdated, match="mtl-tune db upgrade"):
        make_client(url)


def test_the_url_that_carries_the_token_leaves_a_strict_http_only_cookie(guarded: TestClient) -> None:
    page = guarded.get(f"/studies?token={TOKEN}&view=x", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/studies?view=x"  # the token leaves the URL
    cookie = page.headers["set-cookie"]
    assert TOKEN in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert guarded.post("/api/studies/guarded/stop", json={}).status_code == 200  # the cookie authorizes changes


def test_a_wrong_token_in_the_url_leaves_no_cookie(guarded: TestClient) -> None:
    page = guarded.get("/?token=wrong", follow_redirects=False)
    assert page.status_code == 200 and "set-cookie" not in page.headers
    assert guarded.post("/api/studies/guarded/stop", json={}).status_code == 401
    guarded.cookies.set("mtl-tune-token-80", "wrong")
    assert guarded.post("/api/studies/guarded/stop", json={}).status_code == 401


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://testserver.evil.example", "https://testserver:1"]
)
def test_changes_from_another_origin_are_refused(guarded: TestClient, origin: str) -> None:
    guarded.get(f"/?token={TOKEN}")
    response = guarded.post("/api/studies/guarded/stop", json={}, headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert guarded.get("/api/studies/guarded").json()["status"] == "queued"
    assert guarded.delete("/api/studies/guarded", headers={"Origin": origin}).status_code == 403
    same_origin = guarded.post("/api/studies/guarded/stop", json={}, headers={"Origin": "http://testserver"})
    assert same_origin.status_code == 200


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {},  # a no-cors fetch with no body
        {"data": {"a": "1"}},  # an HTML form
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
        {"content": b"{}", "headers": {"content-type": "multipart/form-data; boundary=x"}},
    ],
    ids=["no-body", "form", "text", "multipart"],
)
def test_a_change_without_a_json_body_is_415(sqlite_client: TestClient, request_kwargs: dict[str, object]) -> None:
    # Without a token (serve --no-token) this is what stops a cross-site page from changing anything.
    assert sqlite_client.post("/api/studies", json=launch_body(name="s")).status_code == 201
    response = sqlite_client.post("/api/studies/s/stop", **request_kwargs)  # type: ignore[arg-type]
    assert response.status_code == 415 and "application/json" in response.json()["detail"]
    assert sqlite_client.get("/api/studies/s").json()["status"] == "queued"


def test_a_change_with_an_authorization_header_may_have_no_body(guarded: TestClient) -> None:
    # No web page can send an Authorization header elsewhere without a CORS preflight: curl and the docs page may.
    assert guarded.post("/api/studies/guarded/stop", headers=AUTHORIZED).status_code == 200
    assert guarded.post("/api/studies/guarded/resume", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize(
    ("bound", "host", "status"),
    [
        ("127.0.0.1", "127.0.0.1:8000", 200),
        ("127.0.0.1", "localhost:8000", 200),
        ("127.0.0.1", "[::1]:8000", 200),
        ("127.0.0.1", "evil.example:8000", 400),  # a name rebound to 127.0.0.1
        ("127.0.0.1", "evil.example", 400),
        ("10.1.2.3", "10.1.2.3:8000", 200),
        ("10.1.2.3", "other.example", 400),
        ("0.0.0.0", "any.example", 200),
    ],
)
def test_hosts_outside_the_trusted_ones_are_refused(sqlite_url: str, bound: str, host: str, status: int) -> None:
    settings = Settings(storage=sqlite_url, allowed_hosts=trusted_hosts(bound, None))
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/studies", headers={"Host": host})
    assert response.status_code == status, response.text
    assert response.headers["x-frame-options"] == "DENY"


def test_configured_hosts_are_trusted_too(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("MTL_TUNE_ALLOWED_HOSTS", "mtl.example.org, Other.Example")
    configured = Settings(storage=sqlite_url).allowed_hosts
    assert configured == ["mtl.example.org", "Other.Example"]
    settings = Settings(storage=sqlite_url, allowed_hosts=trusted_hosts("0.0.0.0", configured))
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/studies", headers={"Host": "other.example:80"}).status_code == 200
        assert client.get("/api/studies", headers={"Host": "localhost"}).status_code == 200
        assert client.get("/api/studies", headers={"Host": "evil.example"}).status_code == 400


def test_validation_errors_name_no_absolute_server_path(make_client: Callable[..., TestClient], sqlite_url: str,
                                                        tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    (data / "only-target.csv").write_text("y\n" + "1\n" * 20)
    client = make_client(sqlite_url, data_dir=data)
    body = launch_body(problem="csv", problem_options={"data": "only-target.csv", "target": ["y:regression"]})
    response = client.post("/api/studies", json=body)
    assert response.status_code == 422, response.text
    assert "only-target.csv" in response.text and str(tmp_path) not in response.text


def test_reads_do_not_import_torch(tmp_path: Path) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from api.main import create_app
from api.settings import Settings
with TestClient(create_app(Settings(storage="sqlite:///{tmp_path / "reads.db"}"))) as client:
    for path in ("/api/health", "/api/studies", "/api/studies/x", "/api/studies/x/verdict", "/docs", "/openapi.json"):
        client.get(path)
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
