"""``mtl-tune serve``: the REST API and dashboard under uvicorn, plus supervised local worker processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from mtl_tune_cli._common import console, fail, user_errors
from mtl_tune_cli._demo import launch_demo
from mtl_tune_cli._options import StorageOption, resolve_storage

if TYPE_CHECKING:
    import uvicorn

    from api.settings import Settings


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the API to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    storage_url: StorageOption = None,
    workers: Annotated[
        int,
        typer.Option(
            min=0, help="Local worker processes to run and supervise; 0 when workers run elsewhere (`mtl-tune worker`)."
        ),
    ] = 1,
    devices: Annotated[
        str | None,
        typer.Option(help="Comma-separated devices assigned to the workers round-robin, e.g. cuda:0,cuda:1."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    demo: Annotated[
        bool, typer.Option(help="Launch a demo gradnorm-toy study when the database has no study yet.")
    ] = False,
) -> None:
    """Serve the API (docs at /docs) and the dashboard; set MTL_TUNE_API_TOKEN to require a bearer token for
    changes, MTL_TUNE_DATA_DIR for the directory csv studies may read."""
    import logging

    import uvicorn

    import storage
    from api.main import create_app
    from api.settings import Settings
    from api.workers import WorkerPool

    with user_errors():
        url = resolve_storage(storage_url)
        settings = Settings(storage=url)
        try:
            storage.ensure_schema(url)  # an outdated schema stops here, before any worker starts
        except storage.StorageError as exc:
            raise fail(str(exc)) from None
        if demo:
            launch_demo(url)
    device_list = [d.strip() for d in (devices or "").split(",") if d.strip()]
    pool = WorkerPool(url, count=workers, devices=device_list)
    app = create_app(settings)
    app.state.worker_pool = pool
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    server = uvicorn.Server(uvicorn_config(app, settings, host=host, port=port, log_level=log_level))
    console.print(f"mtl-tune serving {storage.redact(url)} on http://{host}:{port} with {workers} local worker(s)",
                  soft_wrap=True)  # fmt: skip
    try:
        server.run()  # the app's lifespan starts the workers and stops them at shutdown
    finally:
        pool.stop()  # also when startup failed half-way
    if not server.started:
        raise typer.Exit(1)


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """uvicorn's configuration for ``app``, with the connection timeouts of ``settings``.

    An idle connection closes ``keep_alive_seconds`` after a response; a request's line and headers must arrive
    within ``request_head_seconds`` of the connection's opening or of the previous response (``HeadTimeoutProtocol``:
    uvicorn alone would wait for them without limit). Not bounded in time: a request body once its head has arrived
    (bounded in size, ``max_body_bytes``) and a slow client reading a response.
    """
    import uvicorn

    from api.middleware import HeadTimeoutProtocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=HeadTimeoutProtocol.with_timeout(settings.request_head_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
    )
