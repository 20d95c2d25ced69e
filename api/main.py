"""The FastAPI app: the REST API under ``/api``, the dashboard pages at ``/``, OpenAPI docs at ``/docs``."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

import storage
from api.db import ensure_ready
from api.errors import install_handlers
from api.importance import ImportanceCache
from api.middleware import BodySizeLimit, ServerTiming
from api.routers import health, importance, problems, studies, trials
from api.settings import Settings, get_settings

log = logging.getLogger("mtl_tune.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment, ``get_settings()``).

    At startup the database is set up when empty and refused when its schema is outdated (run
    ``mtl-tune db upgrade``); an unreachable one leaves the app up, answering 503 until it is back. A
    ``WorkerPool`` placed in ``app.state.worker_pool`` is started and stopped with the app.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(ensure_ready, settings.storage)
        except storage.StorageUnavailable as exc:  # an outdated schema (SchemaOutdated) does stop the app
            log.warning("%s; serving 503 until it is reachable", exc)
        pool = getattr(app.state, "worker_pool", None)  # set by `mtl-tune serve`
        if pool is not None:
            pool.start()
        yield
        app.state.importance.close()
        if pool is not None:  # before uvicorn re-raises SIGTERM/SIGINT, which would end the process at once
            await run_in_threadpool(pool.stop)

    app = FastAPI(
        title="mtl-tune",
        summary="Hyperparameter optimisation for multi-task learning: studies, trials, per-task curves.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.state.importance = ImportanceCache(max_trials=settings.importance_max_trials)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ServerTiming)
    install_handlers(app)
    api = APIRouter(prefix="/api")
    for module in (health, problems, studies, trials, importance):
        api.include_router(module.router)
    app.include_router(api)
    pages = _pages()
    if pages is not None:
        app.include_router(pages.router)
    return app


def _pages() -> ModuleType | None:
    """The dashboard's router, when the dashboard is installed."""
    try:
        return importlib.import_module("api.routers.pages")
    except ModuleNotFoundError as exc:
        if exc.name != "api.routers.pages":
            raise
        return None
