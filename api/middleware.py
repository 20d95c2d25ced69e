"""ASGI middleware: the request body size limit and the ``Server-Timing`` header."""

from __future__ import annotations

import time

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
