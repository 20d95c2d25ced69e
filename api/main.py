"""The FastAPI app: the REST API under ``/api``, the dashboard pages at ``/``, OpenAPI docs at ``/docs``.

Everything a page needs is served by the app itself, the docs' Swagger UI and ReDoc included, so it works offline.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from types import ModuleType

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import storage
from api.db import ensure_ready
from api.errors import install_handlers
from api.importance import ImportanceCache
from api.middleware import BodySizeLimit, RequestGuard, SecurityHeaders, ServerTiming, TokenCookie
from api.routers import health, importance, problems, studies, trials
from api.settings import Settings, get_settings

log = logging.getLogger("mtl_tune.api")

#: Responses smaller than this go out uncompressed: gzip would save little and cost a round of CPU.
GZIP_MINIMUM_BYTES = 1024
#: Where the docs pages' scripts and styles are served from (the files ``fastapi-offline`` ships).
DOCS_ASSETS = "/docs/assets"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment, ``get_settings()``).

    At startup the database is set up when empty and refused when its schema is outdated (run
    ``mtl-tune db upgrade``); an unreachable one leaves the app up, answering 503 until it is back. A
    ``WorkerPool`` placed in ``app.state.worker_pool`` is started and stopped with the app. Host names are
    checked against ``settings.allowed_hosts`` (unset: any; ``serve`` sets them from the address it binds).
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
        docs_url=None,  # served below, with local assets instead of a CDN's
        redoc_url=None,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.state.settings = settings
    app.state.importance = ImportanceCache(max_trials=settings.importance_max_trials)
    if settings.api_token is not None:
        app.add_middleware(TokenCookie, token=settings.api_token.get_secret_value())
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts or ["*"])
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES)
    app.add_middleware(ServerTiming)
    app.add_middleware(SecurityHeaders)  # outermost: also on the errors the other middleware answers
    install_handlers(app)
    _add_docs(app)
    api = APIRouter(prefix="/api")
    for module in (health, problems, studies, trials, importance):
        api.include_router(module.router)
    app.include_router(api)
    pages = _pages()
    if pages is not None:
        app.include_router(pages.router)
    return app


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc``, FastAPI's own pages pointed at assets this app serves."""
    assets = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    app.mount(DOCS_ASSETS, assets, name="docs_assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return root + (app.openapi_url or "/openapi.json"), root + DOCS_ASSETS

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        openapi, base = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        openapi, base = urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}/redoc.standalone.js",
            redoc_favicon_url=f"{base}/favicon.png",
            with_google_fonts=False,
        )


def _pages() -> ModuleType | None:
    """The dashboard's router, when the dashboard is installed."""
    try:
        return importlib.import_module("api.routers.pages")
    except ModuleNotFoundError as exc:
        if exc.name != "api.routers.pages":
            raise
        return None
