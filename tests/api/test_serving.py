"""How the app serves: offline docs, gzip, security headers on every response, and connection timeouts."""

from __future__ import annotations

import gzip
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.middleware import SECURITY_HEADERS, HeadTimeoutProtocol
from api.routers.pages import plotly_js
from api.settings import Settings
from mtl_tune_cli.serve_cmd import uvicorn_config
from tests.e2e.helpers import free_port, wait_for


@pytest.mark.parametrize(("page", "assets"), [("/docs", 3), ("/redoc", 2)])
def test_docs_load_only_local_assets(shared_client: TestClient, page: str, assets: int) -> None:
    response = shared_client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert len(urls) == assets, urls
    assert "http://" not in response.text and "https://" not in response.text
    for url in urls:
        assert url.startswith("/docs/assets/"), url
        asset = shared_client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}[Path(url).suffix]
        assert expected in kind, (url, kind)
        assert asset.content == (files("fastapi_offline") / "static" / Path(url).name).read_bytes()


def test_docs_follow_the_root_path(shared_client: TestClient) -> None:
    text = shared_client.get("/docs").text
    behind_proxy = TestClient(shared_client.app, root_path="/tune")
    proxied = behind_proxy.get("/docs").text
    assert "'/openapi.json'" in text and "'/tune/openapi.json'" in proxied
    assert 'src="/tune/docs/assets/swagger-ui-bundle.js"' in proxied


def test_plotly_goes_out_gzip_encoded(shared_client: TestClient) -> None:
    original = plotly_js().read_bytes()
    with shared_client.stream("GET", "/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        wire = b"".join(response.iter_raw())
    assert len(wire) < len(original) / 2, (len(wire), len(original))
    assert gzip.decompress(wire) == original


def test_without_accept_encoding_nothing_is_compressed(shared_client: TestClient) -> None:
    response = shared_client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == plotly_js().stat().st_size


def test_small_responses_are_not_compressed(shared_client: TestClient) -> None:
    response = shared_client.get("/api/health", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and "content-encoding" not in response.headers


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/api/studies", 200),
        ("/static/vendor/plotly.min.js", 200),
        ("/docs", 200),
        ("/docs/assets/swagger-ui.css", 200),
        ("/api/studies/none-such", 404),
        ("/no/such/page", 404),
        ("/api/studies/bad%20name", 422),
    ],
)
def test_security_headers_on_every_response(shared_client: TestClient, path: str, status: int) -> None:
    response = shared_client.get(path)
    assert response.status_code == status, response.text
    for name, value in SECURITY_HEADERS:
        assert response.headers.get_list(name.decode()) == [value.decode()], name


def test_security_headers_on_a_refused_body(shared_client: TestClient) -> None:
    response = shared_client.post("/api/studies", content=b"x", headers={"content-length": "nan"})
    assert response.status_code == 400
    assert response.headers["x-frame-options"] == "DENY" and response.headers["x-content-type-options"] == "nosniff"


def test_serve_configures_the_connection_timeouts() -> None:
    settings = Settings(storage="sqlite://", keep_alive_seconds=7, request_head_seconds=3.5)
    config = uvicorn_config(FastAPI(), settings, host="127.0.0.1", port=1234, log_level="warning")
    assert config.timeout_keep_alive == 7
    assert isinstance(config.http, type) and issubclass(config.http, HeadTimeoutProtocol)
    assert config.http.head_timeout == 3.5


def test_the_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTL_TUNE_KEEP_ALIVE_SECONDS", "2")
    monkeypatch.setenv("MTL_TUNE_REQUEST_HEAD_SECONDS", "0.5")
    settings = Settings(storage="sqlite://")
    assert (settings.keep_alive_seconds, settings.request_head_seconds) == (2, 0.5)


HEAD_SECONDS = 0.6


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    """A real uvicorn server configured as ``mtl-tune serve`` configures it, with short timeouts."""
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    port = free_port()
    settings = Settings(storage="sqlite://", keep_alive_seconds=1, request_head_seconds=HEAD_SECONDS)
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "the server to start")
    yield port
    server.should_exit = True
    thread.join(10)


def seconds_until_closed(conn: socket.socket, limit: float = 5.0) -> float:
    """How long until the server closes ``conn`` (reads whatever it sends meanwhile)."""
    start = time.monotonic()
    conn.settimeout(limit)
    while conn.recv(65536):
        pass
    return time.monotonic() - start


def test_a_connection_that_sends_nothing_is_closed(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served)) as conn:
        elapsed = seconds_until_closed(conn)
    assert HEAD_SECONDS * 0.8 <= elapsed < HEAD_SECONDS + 2


def test_a_head_sent_byte_by_byte_is_cut_off(served: int) -> None:
    trickle = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200  # about 10 s at one byte per 0.05 s
    closed_after = None
    with socket.create_connection(("127.0.0.1", served)) as conn:
        start = time.monotonic()
        for byte in trickle:
            try:
                conn.sendall(bytes([byte]))
                readable, _, _ = select.select([conn], [], [], 0.05)
                gone = bool(readable) and conn.recv(1) == b""
            except OSError:
                gone = True
            if gone:
                closed_after = time.monotonic() - start
                break
    assert closed_after is not None, "the server kept reading the head"
    assert HEAD_SECONDS * 0.8 <= closed_after < HEAD_SECONDS + 2


def _response(conn: socket.socket) -> bytes:
    """One whole response (its head, then Content-Length bytes), however the server's writes were split."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_prompt_request_is_answered_and_kept_alive(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served)) as conn:
        time.sleep(HEAD_SECONDS / 2)
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(3)
        assert _response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(HEAD_SECONDS / 2)  # a second request on the same connection, within both timeouts
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(conn).startswith(b"HTTP/1.1 200")
        elapsed = seconds_until_closed(conn)  # then idle: closed by the keep-alive or head deadline
    assert elapsed < 1 + 2
