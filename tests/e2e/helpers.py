"""What the end-to-end tests share: a free port, and waiting for a condition over HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """``check()``'s first truthy result; a server not answering yet counts as a falsy one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
