"""Who may change things, and from where: the API token (kept in a file between starts, carried by a bearer header
or the dashboard's cookie) and the Host names the server answers to.

The defaults follow Jupyter's: ``serve`` makes a random token on its first start and prints the URL that carries
it; opening that URL once gives the browser an HttpOnly, SameSite=Strict cookie that no other site can send.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from starlette.types import Scope

TOKEN_QUERY = "token"
#: The names a browser on this machine uses for it: never the name of an attacker's page (DNS rebinding).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("", "0.0.0.0", "::")


def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/mtl-tune/api-token``, by default ``~/.config/mtl-tune/api-token``."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "mtl-tune" / "api-token"


def load_or_create_token(path: Path) -> str:
    """The token stored in ``path``; a new random one, written there readable by its owner only, when it has none."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def token_cookie(scope: Scope) -> str:
    """The cookie's name, per port: browsers share cookies between the ports of one host."""
    server = scope.get("server") or ("", 0)
    return f"mtl-tune-token-{server[1]}"


def trusted_hosts(bound: str, configured: Sequence[str] | None) -> list[str]:
    """The Host names a server bound to ``bound`` answers to: this machine's own names, the bound address, and the
    ``configured`` ones. Bound to every interface (``0.0.0.0``, ``::``) with none configured: any name (``*``), as
    behind a proxy or in a container the names are not known here; the token then guards the changes."""
    if bound.strip("[]") in _WILDCARDS and not configured:
        return ["*"]
    return list(dict.fromkeys([*LOCAL_HOSTS, bound.strip("[]").lower(), *(h.lower() for h in configured or ())]))


def host_name(host_header: str) -> str:
    """``example.org`` from ``example.org:8000``; ``::1`` from ``[::1]:8000``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # a bare IPv6 address
        return host
    return host.partition(":")[0]
