"""``mtl-tune serve``: the REST API and dashboard under uvicorn, plus supervised local worker processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from mtl_tune_cli._common import console, fail, user_errors, wait_for_database
from mtl_tune_cli._demo import launch_demo
from mtl_tune_cli._options import StorageOption, resolve_storage
from mtl_tune_cli.worker_cmd import check_device

if TYPE_CHECKING:
    import uvicorn
    from pydantic import SecretStr

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
        bool,
        typer.Option(
            help="Launch a demo study (multi-digits, 30 short trials: a few minutes on a CPU) when the database has "
            "no study yet."
        ),
    ] = False,
    no_token: Annotated[
        bool,
        typer.Option(
            "--no-token",
            help="Serve without a token: whoever reaches the port may launch, stop and delete studies. Only for a "
            "trusted machine or network.",
        ),
    ] = False,
) -> None:
    """Serve the API (docs at /docs) and the dashboard. Changes need a token: MTL_TUNE_API_TOKEN, else one made on
    the first start and kept in MTL_TUNE_TOKEN_FILE (~/.config/mtl-tune/api-token); the URL printed at start carries
    it. MTL_TUNE_ALLOWED_HOSTS adds Host names to accept, MTL_TUNE_DATA_DIR sets the directory csv studies may
    read. An unreachable database server is waited for."""
    import logging

    import uvicorn

    from api.auth import trusted_hosts
    from api.main import create_app
    from api.settings import Settings
    from api.workers import WorkerPool

    device_list = [d.strip() for d in (devices or "").split(",") if d.strip()]
    with user_errors():
        url = resolve_storage(storage_url)
        settings = Settings(storage=url)
        if no_token and settings.api_token is not None:
            raise fail("--no-token contradicts MTL_TUNE_API_TOKEN; unset one of them")
        for device in dict.fromkeys(device_list) if workers else ():
            check_device(device)
        wait_for_database(url)  # an outdated schema stops here, before any worker starts
        token, source = _token(settings, no_token)
        settings = settings.model_copy(
            update={"api_token": token, "allowed_hosts": trusted_hosts(host, settings.allowed_hosts)}
        )
        if demo:
            launch_demo(url)
    pool = WorkerPool(url, count=workers, devices=device_list)
    app = create_app(settings)
    app.state.worker_pool = pool
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    server = uvicorn.Server(uvicorn_config(app, settings, host=host, port=port, log_level=log_level))
    _announce(settings, host=host, port=port, workers=workers, token_source=source)
    try:
        server.run()  # the app's lifespan starts the workers and stops them at shutdown
    finally:
        pool.stop()  # also when startup failed half-way
    if not server.started:
        raise typer.Exit(1)


def _token(settings: Settings, no_token: bool) -> tuple[SecretStr | None, str]:
    """The token changes need, and where it came from: none with ``--no-token``, else ``MTL_TUNE_API_TOKEN``, else
    the token file (made on the first start)."""
    from pydantic import SecretStr

    from api.auth import load_or_create_token

    if no_token:
        return None, "none"
    if settings.api_token is not None:
        return settings.api_token, "MTL_TUNE_API_TOKEN"
    return SecretStr(load_or_create_token(settings.token_file)), str(settings.token_file)


def _announce(settings: Settings, *, host: str, port: int, workers: int, token_source: str) -> None:
    """The address to open, with the token when it is this machine's own (a token from the environment is not
    printed: logs of containers are read by others). The database URL is printed without its password."""
    import storage

    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else (f"[{host}]" if ":" in host else host)
    base = f"http://{shown}:{port}/"
    console.print(f"mtl-tune serving {storage.redact(settings.storage)} with {workers} local worker(s)",
                  soft_wrap=True, highlight=False, markup=False)  # fmt: skip
    if settings.api_token is None:
        console.print(f"  {base}  (no token: anyone who reaches this port may change studies)", soft_wrap=True,
                      highlight=False, markup=False)  # fmt: skip
    elif token_source == "MTL_TUNE_API_TOKEN":
        console.print(f"  {base}  (changes need the token in MTL_TUNE_API_TOKEN)", soft_wrap=True,
                      highlight=False, markup=False)  # fmt: skip
    else:
        console.print(f"  {base}?token={settings.api_token.get_secret_value()}", soft_wrap=True, highlight=False,
                      markup=False)  # fmt: skip
        console.print(f"  (the token is kept in {token_source}; open this URL once, the browser keeps it)",
                      soft_wrap=True, highlight=False, markup=False)  # fmt: skip


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
