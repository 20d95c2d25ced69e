"""``mtl-tune worker``: run trials of queued studies from any machine that reaches the database."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mtl_tune_cli._common import console, fail, show_worker_log, user_errors, wait_for_database
from mtl_tune_cli._options import StorageOption, resolve_storage


def worker_command(study: str, *options: str) -> list[str]:
    """The command line of a local ``mtl-tune worker`` process for ``study`` (this interpreter, this package); the
    storage URL goes in its environment (``api.workers.worker_environment``), where ``ps`` does not show it."""
    return [sys.executable, "-m", "mtl_tune_cli.main", "worker", "--study", study, *options]


def prepare_worker(threads: int | None, verbose: bool = False) -> None:
    """Optuna's trial lines with ``verbose`` (otherwise the level ``mtl-tune --verbose`` chose), and training on
    ``threads`` CPU threads (``None``: torch's choice)."""
    import warnings

    import optuna

    if verbose:
        optuna.logging.set_verbosity(optuna.logging.INFO)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        # numpy's BLAS as well: its idle threads spin, and two workers' pools on two cores slow both several-fold.
        threadpool_limits(limits=threads)


def check_device(name: str | None) -> None:
    """Refuse (exit 2) a device this machine does not have, before anything looks for work: CUDA on a machine
    without it, a GPU index past the last one (counted without opening a CUDA context: ``serve`` checks its
    workers' devices too, and must not hold GPU memory), any other device by making a tensor on it."""
    if not name:
        return
    import torch

    from tuner.config import ConfigError
    from tuner.device import resolve_device

    try:
        device = resolve_device(name)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise fail(f"device: {name!r} requested but this machine has {count} CUDA device(s)")
        return
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:  # torch's own errors, e.g. a build without MPS
        first_sentence = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(f"device: {name!r} is not usable on this machine: {first_sentence}") from None


def worker(
    storage_url: StorageOption = None,
    study: Annotated[str | None, typer.Option(help="Only run trials (and confirmation runs) of this study.")] = None,
    device: Annotated[str | None, typer.Option(help="Device for training, e.g. cuda:0 or cpu.")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Exit after this many trials.")] = None,
    exit_when_idle: Annotated[
        bool, typer.Option(help="Exit when no study needs trials or confirmation runs instead of polling.")
    ] = False,
    confirm_only: Annotated[bool, typer.Option(help="Run confirmation runs only, no trials.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks for work when idle.")] = 2.0,
    heartbeat: Annotated[int, typer.Option(help="Seconds between heartbeats of the running trial.")] = 10,
    grace: Annotated[int, typer.Option(help="Seconds of silence after which a trial's worker counts as dead.")] = 60,
    deadline: Annotated[float | None, typer.Option(hidden=True, help="Unix time after which no trial starts.")] = None,
    worker_index: Annotated[int, typer.Option(hidden=True, help="Offsets the sampler seed of local workers.")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for training (default: torch's choice).")] = None,
    verbose: Annotated[bool, typer.Option(help="Log every trial (Optuna's INFO messages).")] = False,
) -> None:
    """Loop: find a study that needs trials, claim a slot, run one trial, repeat; with no trial to run, run a study's
    confirmation runs (its chosen configurations trained again with fresh seeds). SIGTERM/SIGINT end it cleanly
    (the running trial is marked interrupted and its slot is retried by another worker), and so does a closed terminal
    (SIGHUP). An unreachable database
    server is waited for; a device this machine lacks is refused (exit 2)."""
    from tuner.study import Worker, WorkerSettings

    prepare_worker(threads, verbose)
    show_worker_log()
    check_device(device)
    with user_errors():
        url = resolve_storage(storage_url)
        wait_for_database(url)
        settings = WorkerSettings(
            url=url,
            study_name=study,
            device=device,
            max_trials=max_trials,
            exit_when_idle=exit_when_idle,
            poll_seconds=poll,
            heartbeat_seconds=heartbeat,
            grace_seconds=grace,
            deadline=deadline,
            worker_index=worker_index,
            confirm_only=confirm_only,
        )
        try:
            n = Worker(settings).run()
        except KeyboardInterrupt:
            console.print("worker interrupted; its running trial was marked interrupted and will be retried")
            raise typer.Exit(130) from None
    console.print(f"worker done: {n} trial(s) run")
