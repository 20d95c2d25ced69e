"""Dependencies the routes take as typed parameters."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

import storage
from api.auth import token_cookie
from api.db import ensure_ready
from api.importance import ImportanceCache
from api.schemas import INT32_MAX, NAME_PATTERN
from api.settings import Settings, get_settings
from api.workers import WorkerPool

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    ensure_ready(settings.storage)
    with storage.session_scope(settings.storage) as session:
        yield session


# The session commits before the response starts: a commit that fails (a dropped connection) is answered 503.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StudyName = Annotated[str, Path(pattern=NAME_PATTERN, description="study name")]
TrialNumber = Annotated[int, Path(ge=0, le=INT32_MAX, description="trial number")]


def get_job(session: SessionDep, name: StudyName) -> storage.StudyJob:
    return storage.get_job(session, name)


JobDep = Annotated[storage.StudyJob, Depends(get_job)]

_bearer = HTTPBearer(auto_error=False, description="the server's API token, unless it was started with --no-token")


def require_token(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Mutating routes need the server's token, when it has one: ``Authorization: Bearer <token>``, or the cookie a
    browser got by opening the URL that carries it (``TokenCookie``)."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    if credentials is not None:
        given = credentials.credentials.encode()
    else:
        given = request.cookies.get(token_cookie(request.scope), "").encode()
    if not secrets.compare_digest(given, expected):
        raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})


Authorized = Depends(require_token)


def get_importance(request: Request) -> ImportanceCache:
    cache: ImportanceCache = request.app.state.importance
    return cache


def get_worker_pool(request: Request) -> WorkerPool | None:
    return getattr(request.app.state, "worker_pool", None)


ImportanceDep = Annotated[ImportanceCache, Depends(get_importance)]
WorkerPoolDep = Annotated[WorkerPool | None, Depends(get_worker_pool)]
