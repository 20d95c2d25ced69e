"""ASGI middleware: the request body size limit, trusted hosts and same-origin changes, the token cookie, security
headers and the ``Server-Timing`` header; and the HTTP connection protocol that bounds how long a request's head
may take to arrive."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.auth import TOKEN_QUERY, host_name, token_cookie


class BodySizeLimit:
    """A declared ``Content-Length`` over the limit is refused before reading, a streamed body as soon as it passes
    the limit (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await JSONResponse({"detail": "invalid Content-Length"}, 400)(scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self._detail()}, 413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes FastAPI's body parsing unchanged and becomes the response.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"


#: Methods that change something; the others only read.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Methods a cross-site HTML form can send: their requests must declare a JSON body, which no form can.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestGuard:
    """What a web page elsewhere must not do through a visitor's browser.

    - A ``Host`` outside ``allowed_hosts`` is refused (400): a page whose name was rebound to this server's address
      (DNS rebinding) reads nothing.
    - A change (POST, PUT, PATCH, DELETE) carrying an ``Origin`` other than this server's own is refused (403), and a
      POST, PUT or PATCH must declare ``Content-Type: application/json`` (415): that is a type no cross-site form or
      ``no-cors`` fetch may send without the permission of a CORS preflight, which this server never grants. An
      ``Authorization`` header needs that permission as well, so a request carrying one (a script's bearer token,
      the docs page's "Try it out") may leave a body-less change untyped.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            status, detail = refusal
            await JSONResponse({"detail": detail}, status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            return 400, "untrusted Host header (the server's MTL_TUNE_ALLOWED_HOSTS lists the names it answers to)"
        method = scope["method"]
        if method not in UNSAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return 403, "cross-origin request refused: changes are accepted from this server's own pages only"
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if method in _BODY_METHODS and media_type != "application/json" and "authorization" not in headers:
            return 415, f"{method} requests need 'Content-Type: application/json' (or an Authorization header)"
        return None


class TokenCookie:
    """A page opened with the right ``?token=`` is answered with a redirect to the same address without it, and a
    cookie that carries the token from then on (HttpOnly: scripts cannot read it; SameSite=Strict: no other site's
    page can make the browser send it)."""

    MAX_AGE_SECONDS = 30 * 24 * 3600

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        given = [value for name, value in query if name == TOKEN_QUERY]
        if len(given) != 1 or not secrets.compare_digest(given[0].encode(), self.token):
            await self.app(scope, receive, send)
            return
        rest = urlencode([(name, value) for name, value in query if name != TOKEN_QUERY])
        path = "/" + scope["path"].lstrip("/")  # never "//host": a redirect to another site
        location = scope.get("root_path", "").rstrip("/") + path + (f"?{rest}" if rest else "")
        response = RedirectResponse(location, status_code=303)
        response.set_cookie(token_cookie(scope), given[0], max_age=self.MAX_AGE_SECONDS, path="/", httponly=True,
                            samesite="strict")  # fmt: skip
        await response(scope, receive, send)


class ServerTiming:
    """``Server-Timing: app;dur=<ms>`` on every response: the time the app took, as the benchmark reports it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - start) * 1000
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"server-timing", f"app;dur={elapsed:.1f}".encode())],
                }
            await send(message)

        await self.app(scope, receive, timed)


#: Sent with every response unless the route set the header itself: no page of this app may be framed by another
#: site (clickjacking), browsers must not guess content types, and other sites learn no paths from the Referer.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """``SECURITY_HEADERS`` on every HTTP response: pages, API answers, static assets and errors alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for each request's line and headers.

    uvicorn closes a connection left idle after a response (``timeout_keep_alive``) but waits without limit for a
    first request, and for a request whose head has started to arrive: a client that connects and sends nothing, or
    sends headers a byte at a time, would hold its connection for ever. Here the head must be complete within
    ``head_timeout`` seconds of the connection's opening or of the previous response's end; otherwise the connection is
    closed. A request whose head has arrived is not limited (its body by size only, ``max_body_bytes``).
    """

    head_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[HeadTimeoutProtocol]:
        """This protocol with a head deadline of ``seconds``, for uvicorn's ``Config(http=...)``."""
        return type(cls.__name__, (cls,), {"head_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        if self.transport.is_closing():
            return
        self._head_deadline = self.loop.call_later(self.head_timeout, self._on_head_deadline)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _on_head_deadline(self) -> None:
        self._head_deadline = None
        # A request whose head has arrived has a cycle until its response is complete (which re-arms the deadline).
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()
