"""Known failures become HTTP answers: unknown study 404, duplicate 409, storage trouble 503; never a 500.

Answers name no server path and no database host, user or name: storage trouble is told in general terms (the log
has the details), and the data directory's absolute path is cut from messages, leaving the path the client sent.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import optuna
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

import storage
from storage._engine import is_unavailable

log = logging.getLogger("mtl_tune.api")


class NotFound(LookupError):
    """Something other than a study (e.g. a trial number) does not exist."""


def invalid(loc: Sequence[str | int], msg: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, for checks that run after the body parsed (space, problem, data path)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}])


def _detail(status: int, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _detail(404, exc)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return _detail(409, exc)


#: What a client is told of storage trouble; the server's log says which database and why.
UNAVAILABLE = "storage unavailable: the database cannot be reached now; try again later"
STORAGE_ERROR = "storage error: the database could not complete the request; try again later"


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("storage: %s", exc)
    if isinstance(exc, storage.SchemaOutdated):  # names revisions and the command that fixes it, nothing else
        return _detail(503, exc)
    message = UNAVAILABLE if isinstance(exc, storage.StorageUnavailable) else STORAGE_ERROR
    return JSONResponse({"detail": message}, status_code=503)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    # Raised outside storage.session_scope (e.g. by Optuna's own engine): "unreachable" and "locked" are 503.
    assert isinstance(exc, DBAPIError)
    if is_unavailable(exc) or exc.__class__.__name__ == "OperationalError":
        return await _unavailable(request, storage.StorageUnavailable(f"storage unavailable: {exc.orig}"))
    raise exc


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own 422 body, except that an echoed NaN or Infinity input (JSON has neither) becomes a string, and
    # the data directory's absolute path is cut from messages (a csv file is named as the client named it).
    assert isinstance(exc, RequestValidationError)
    settings = getattr(request.app.state, "settings", None)
    root = str(settings.data_dir.resolve()) if settings is not None else None
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()), root)}, status_code=422)


def _json_safe(value: Any, root: str | None) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and root:
        return value.replace(root + os.sep, "").replace(root, "the data directory")
    if isinstance(value, dict):
        return {k: _json_safe(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v, root) for v in value]
    return value


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(storage.StudyNotFound, _not_found)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(storage.StudyExists, _conflict)
    app.add_exception_handler(storage.StorageError, _unavailable)  # unavailable, busy, schema outdated
    app.add_exception_handler(optuna.exceptions.StorageInternalError, _unavailable)
    app.add_exception_handler(DBAPIError, _driver_error)
