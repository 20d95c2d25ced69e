"""Known failures become HTTP answers: unknown study 404, duplicate 409, storage trouble 503; never a 500."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import optuna
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

import storage
from storage._errors import is_unavailable

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


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("storage: %s", exc)
    return _detail(503, exc)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    # Raised outside storage.session_scope (e.g. by Optuna's own engine): "unreachable" and "locked" are 503.
    assert isinstance(exc, DBAPIError)
    if is_unavailable(exc) or exc.__class__.__name__ == "OperationalError":
        return await _unavailable(request, storage.StorageUnavailable(f"storage unavailable: {exc.orig}"))
    raise exc


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own 422 body, except that an echoed NaN or Infinity input (JSON has neither) becomes a string.
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(storage.StudyNotFound, _not_found)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(storage.StudyExists, _conflict)
    app.add_exception_handler(storage.StorageError, _unavailable)  # unavailable, busy, schema outdated
    app.add_exception_handler(optuna.exceptions.StorageInternalError, _unavailable)
    app.add_exception_handler(DBAPIError, _driver_error)
