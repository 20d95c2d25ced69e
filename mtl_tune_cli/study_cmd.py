"""``mtl-tune study run|list|show|confirm|best|export|delete``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from api.workers import worker_environment
from mtl_tune_cli._common import console, fail, print_table, user_errors
from mtl_tune_cli._options import StorageOption, resolve_storage
from mtl_tune_cli._verdict import print_verdict
from mtl_tune_cli.worker_cmd import prepare_worker, worker_command
from tuner.limits import Limits

app = typer.Typer(help="Launch, follow and inspect studies.", no_args_is_help=True)


@app.command()
def run(
    problem: Annotated[str, typer.Option(help="Problem name (see `mtl-tune problems`).")],
    tasks: Annotated[int | None, typer.Option(help="Number of tasks, for problems that take it.")] = None,
    data: Annotated[Path | None, typer.Option(help="CSV file for the csv problem.")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="csv target COLUMN:regression|classification|binary[:METRIC] (repeatable).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="Another problem option KEY=VALUE, e.g. n_train=500 (repeatable; "
            "`mtl-tune problems --options PROBLEM` lists them)."
        ),
    ] = None,
    trials: Annotated[
        int,
        typer.Option(
            help="Finished (complete or pruned) trials to reach; failed ones are retried and do not count "
            f"(at most MTL_TUNE_MAX_TRIALS, {Limits().trials} unless the operator sets it)."
        ),
    ] = 20,
    study: Annotated[
        str | None,
        typer.Option(
            help="Study name; running again with the same name and settings continues it (other settings are "
            "refused, naming each difference, unless --resume)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the --study as it was created, whatever other settings are given (--trials excepted).",
        ),
    ] = False,
    storage_url: StorageOption = None,
    space: Annotated[Path | None, typer.Option(help="Search-space file (YAML or JSON).")] = None,
    sampler: Annotated[str, typer.Option(help="tpe, random, cmaes, gp, nsga2 or qmc.")] = "tpe",
    pruner: Annotated[
        str | None,
        typer.Option(
            help="hyperband (default; none for compare studies), median, successive-halving or none. Pareto studies: "
            "none (default) or "
            "dominated (mtl-tune's rule, as Optuna cannot prune multi-objective studies: at epochs 1, 3, 9, ... a "
            "trial whose per-task metrics are dominated by those of 3 finished trials is stopped)."
        ),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            help="scalar: minimise mean_i val_loss_i / untrained val_loss_i; pareto: one objective per task metric; "
            "compare: scalar, with the trials shared evenly between the space's strategies (each tuning its own "
            "knobs), so the verdict compares methods tuned with the same budget."
        ),
    ] = "scalar",
    epochs: Annotated[int | None, typer.Option(help="Epochs per trial (default: the problem's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of every trial's training.")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Start no new trial after this many seconds.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Local workers (one runs in this process, more in processes of their own); 0 records the study "
            "and follows workers running elsewhere."
        ),
    ] = 1,
    device: Annotated[str | None, typer.Option(help="Device of the local workers (default: best available).")] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads of each local worker (default: the cores shared out; 1 suits small models)."),
    ] = None,
    detach: Annotated[bool, typer.Option(help="Record the study and return at once.")] = False,
    confirm_seeds: Annotated[
        int,
        typer.Option(
            help="When the target is reached, train the baseline, the best configuration and each strategy's best "
            "again with this many fresh seeds (2 to 50) and judge them on the test split (0: do not)."
        ),
    ] = 3,
) -> None:
    """Create (or resume) a study, run it until TRIALS trials have finished, then confirm its verdict on held-out
    data."""
    import storage
    from tuner.study import StudySpec, create_or_resume, load_space

    with user_errors():
        url = resolve_storage(storage_url)
        options: dict[str, Any] = {
            k: v for k, v in (("tasks", tasks), ("data", str(data) if data else None), ("target", target)) if v
        }
        options.update(parse_options(option))
        space_dict = load_space(space).model_dump(mode="json", exclude_unset=True) if space else None
        spec = StudySpec.model_validate(
            {
                "name": study,
                "problem": problem,
                "problem_options": options,
                "n_trials": trials,
                "space": space_dict,
                "objective": objective,
                "sampler": sampler,
                "pruner": pruner,
                "epochs": epochs,
                "seed": seed,
                "confirm_seeds": confirm_seeds,
            }
        )
        launched = create_or_resume(url, spec, source="cli", resume=resume)
    verb = "created" if launched.created else "resumed"
    console.print(f"study [bold]{launched.study_name}[/] {verb} in {storage.redact(url)}")
    if detach:
        return
    deadline = time.time() + timeout if timeout else None
    threads = threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
    name = launched.study_name
    try:
        with _hangup_as_interrupt():
            if workers == 1:  # no second interpreter to start: the worker runs here
                _run_here(url, name, launched.n_trials, device, deadline, threads)
            else:
                procs = [_spawn_worker(url, name, i, device, deadline, threads) for i in range(workers)]
                try:
                    _follow(url, name, launched.n_trials, procs)
                except KeyboardInterrupt as exc:
                    for p in procs:
                        if isinstance(exc, _Hangup):  # Ctrl-C reaches them too; a closed terminal does not
                            p.terminate()  # SIGTERM: the worker fails its trial and releases its claim
                    for p in procs:
                        p.wait(timeout=60)
                    raise
    except KeyboardInterrupt:
        _stopped(url, name)
        with suppress(OSError):  # a closed terminal cannot be written to
            console.print(f"interrupted: study {name} stopped; run the same command again to resume")
        raise typer.Exit(130) from None
    show(name, storage_url=url)
    _exit_if_failed(url, name)


class _Hangup(KeyboardInterrupt):
    """The terminal was closed (SIGHUP)."""


@contextmanager
def _hangup_as_interrupt() -> Iterator[None]:
    """A closed terminal (SIGHUP) ends the run as Ctrl-C does: trials told FAIL, the study marked stopped."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise _Hangup(f"signal {signum}")

    previous = signal.signal(signal.SIGHUP, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@contextmanager
def _hangup_ignored() -> Iterator[None]:
    """Processes started here ignore a closed terminal (the disposition is inherited): this one stops them instead,
    as Ctrl-C would, rather than the hangup killing them in the middle of a trial."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _stopped(url: str, name: str) -> None:
    """The interrupted study shows ``stopped`` (``stopping`` while workers elsewhere finish their epoch), never
    ``running``: its trials here were told FAIL and their claims released before the interrupt reached this."""
    import storage

    with suppress(storage.StorageError), storage.session_scope(url) as session:
        storage.request_stop(session, name)


def _exit_if_failed(url: str, name: str) -> None:
    import storage

    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
        status, error = job.status, job.last_error
    if status == "failed":
        raise fail(f"study {name} failed: {error or 'no reason recorded'}", code=1)


def parse_options(items: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (numbers, true, lists) is taken as such."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"{flag}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _run_here(url: str, name: str, target: int, device: str | None, deadline: float | None, threads: int) -> None:
    """One worker in this process's main thread (where signals arrive), the progress bar in another."""
    from tuner.study import Worker, WorkerSettings

    prepare_worker(threads)
    settings = WorkerSettings(url=url, study_name=name, device=device, exit_when_idle=True, deadline=deadline)
    done = threading.Event()
    follower = threading.Thread(target=_follow, args=(url, name, target, [], done), daemon=True)
    follower.start()
    try:
        Worker(settings).run()
    finally:
        done.set()
        follower.join()


def _spawn_worker(
    url: str, name: str, index: int, device: str | None, deadline: float | None, threads: int, *flags: str
) -> subprocess.Popen[bytes]:
    # Local workers split the cores between them instead of each taking all of them.
    cmd = worker_command(name, "--exit-when-idle", "--worker-index", str(index), "--threads", str(threads), *flags)
    if device:
        cmd += ["--device", device]
    if deadline:
        cmd += ["--deadline", str(deadline)]
    with _hangup_ignored():
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=worker_environment(url))


def _follow(
    url: str, name: str, target: int, procs: list[subprocess.Popen[bytes]], done: threading.Event | None = None
) -> None:
    """A progress bar fed by the database, so it shows every worker's trials, local or remote, until the local
    worker processes exit, ``done`` is set, or (neither given) the study ends."""
    import storage

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),  # from the pace of finished trials, once two have finished
        TextColumn("{task.fields[detail]}"),
    )
    # A trial may take minutes: the pace is measured over the last hour, not rich's default 30 seconds, in which
    # no two trials would finish and the estimate would stay blank.
    with Progress(*columns, console=console, speed_estimate_period=3600) as progress:
        bar = progress.add_task(name, total=target, detail="")
        confirming: TaskID | None = None
        while True:
            last = done is not None and done.is_set()  # one more look after the local worker ends
            with storage.session_scope(url) as session:
                p = storage.study_progress(session, name)
            best = f"{p.best_value:.4g}" if p.best_value is not None else "-"
            progress.update(
                bar,
                completed=p.complete + p.pruned,
                total=p.n_trials,
                detail=f"complete {p.complete}  pruned {p.pruned}  failed {p.failed}"
                + (f"  interrupted {p.interrupted}" if p.interrupted else "")
                + f"  best {best}",
            )
            runs = p.confirm_runs or {}
            if p.confirming or any(runs.values()):  # the confirmation on held-out data, once asked for
                if confirming is None:
                    confirming = progress.add_task("confirmation", total=None, detail="")
                progress.update(
                    confirming,
                    completed=runs.get("complete", 0) + runs.get("failed", 0),
                    total=sum(runs.values()) or None,
                    detail="choosing configurations" if p.confirm_pending else f"failed {runs.get('failed', 0)}",
                )
            if last or (procs and not any(proc.poll() is None for proc in procs)):
                break
            if done is None and not procs and p.status in ("completed", "failed", "stopped") and not p.confirming:
                break
            if done is not None:
                done.wait(0.5)
            else:
                time.sleep(0.5)
    bad = [proc.returncode for proc in procs if proc.returncode not in (0, None)]
    if bad:
        console.print(f"[yellow]{len(bad)} worker(s) exited with an error (codes {bad})[/]")


@app.command("list")
def list_studies(storage_url: StorageOption = None) -> None:
    """Every study: problem, objective, status, trials by state, best value."""
    import storage

    with user_errors():
        url = resolve_storage(storage_url)
        storage.ensure_schema(url)
        with storage.session_scope(url) as session:
            rows = [storage.study_progress(session, job.study_name) for job in storage.list_jobs(session)]
    table = Table()
    # The name is what `study show|best|export|delete` take: it is never cut; the other columns wrap instead.
    table.add_column("study", no_wrap=True, overflow="fold")
    for heading in ("problem", "objective", "status", "complete", "pruned", "failed", "interrupted", "target", "best"):
        table.add_column(heading, overflow="fold")
    for p in rows:
        best = f"{p.best_value:.4g}" if p.best_value is not None else "-"
        table.add_row(
            p.study_name,
            p.problem,
            p.objective,
            p.status,
            str(p.complete),
            str(p.pruned),
            str(p.failed),
            str(p.interrupted),
            str(p.n_trials),
            best,
        )
    print_table(table)


@app.command()
def show(name: Annotated[str, typer.Argument(help="Study name.")], storage_url: StorageOption = None) -> None:
    """Best configuration, per-task best vs baseline, trials by state; the Pareto set for pareto studies; the verdict
    of its confirmation on held-out data. The same indexed reads as ``GET /api/studies/{name}``."""
    import storage
    from api.views import study_detail
    from tuner.verdict import study_verdict

    with user_errors():
        url = resolve_storage(storage_url)
        storage.ensure_schema(url)
        with storage.session_scope(url) as session:
            detail = study_detail(session, storage.get_job(session, name))
        verdict = study_verdict(url, name)
    console.print(
        f"[bold]{detail.name}[/]  problem {detail.problem}  objective {detail.objective}  status {detail.status}"
    )
    counts = detail.trials.model_dump()
    console.print("trials: " + (", ".join(f"{state} {n}" for state, n in counts.items() if n) or "none yet"))
    for row in detail.best:
        console.print(f"best trial #{row.number}  values {row.values}")
        console.print_json(json.dumps(row.params))
    if detail.objective != "pareto" and detail.best and detail.baseline is None:
        console.print(
            "no baseline result yet: trial 0 (equal weighting, the problem's defaults) has not completed, so the best "
            "trial is not compared with the default; a failed baseline is run again"
        )
    if detail.comparison:
        title = "best vs baseline on the validation split that chose the best (optimistic)"
        table = Table("task", "metric", "baseline", "best", "change", title=title)
        for task, c in detail.comparison.items():
            change = f"{c.change:+.1%}" if c.change is not None else "-"
            if c.better is not None:
                change += " better" if c.better else " worse"
            metric = f"{c.metric} {'↑' if c.direction == 'maximize' else '↓'}"
            table.add_row(task, metric, _fmt(c.baseline), _fmt(c.best), change)
        print_table(table)
    print_verdict(verdict)


@app.command()
def confirm(
    name: Annotated[str, typer.Argument(help="Study name.")],
    seeds: Annotated[
        int | None,
        typer.Option(
            help="Fresh seeds per configuration, 2 to 50 (an interval needs two); default: the study's own (of its "
            "last confirmation or its launch), else 3."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="How many of the best configurations to confirm, 1 to 20.")] = 1,
    workers: Annotated[
        int, typer.Option(help="Local workers (0: queue the runs for workers running elsewhere and return).")
    ] = 1,
    device: Annotated[str | None, typer.Option(help="Device of the local workers (default: best available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads of each local worker.")] = None,
    storage_url: StorageOption = None,
) -> None:
    """Train the baseline, the TOP best configurations, the best of each strategy tried and the tuned static
    weightings on the front (the Pareto set of a pareto study) again with SEEDS fresh seeds, judge them on the test
    split (on validation, said to be optimistic, for a problem without one), and print the verdict.

    The runs go through the study's workers and storage like trials, but never count toward its target and never
    reach its sampler. Finished runs are reused when asked again. A study still running gets a provisional verdict
    and confirms again, with as many seeds, when it reaches its target."""
    import storage
    from storage.confirmations import request_confirmation

    with user_errors():
        url = resolve_storage(storage_url)
        storage.ensure_schema(url)
        with storage.session_scope(url) as session:
            request_confirmation(session, name, seeds=seeds, top=top)
    if workers == 0:
        console.print(f"confirmation of {name} queued; `mtl-tune study show {name}` shows the verdict")
        return
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    try:
        with _hangup_as_interrupt():
            if workers == 1:
                _confirm_here(url, name, device, threads)
            else:
                procs = [_spawn_worker(url, name, i, device, None, threads, "--confirm-only") for i in range(workers)]
                try:
                    for proc in procs:
                        proc.wait()
                except KeyboardInterrupt:
                    for proc in procs:
                        proc.wait(timeout=60)
                    raise
    except KeyboardInterrupt:
        with suppress(OSError):
            console.print(f"interrupted: the confirmation of {name} waits for workers; run the command again to go on")
        raise typer.Exit(130) from None
    from tuner.verdict import study_verdict

    with user_errors():
        print_verdict(study_verdict(url, name))


def _confirm_here(url: str, name: str, device: str | None, threads: int) -> None:
    from tuner.study import Worker, WorkerSettings

    prepare_worker(threads)
    Worker(WorkerSettings(url=url, study_name=name, device=device, exit_when_idle=True, confirm_only=True)).run()


def _fmt(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "-"


@app.command()
def best(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage_url: StorageOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the configuration JSON on stdout.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write the configuration JSON to this file.")] = None,
    trial: Annotated[int | None, typer.Option(help="Take this trial instead (pareto studies need one).")] = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train the configuration again, here.")] = False,
    save: Annotated[
        Path | None, typer.Option(help="With --retrain: write the trained weights and configuration to this file.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="With --retrain: cpu, cuda, cuda:1, mps.")] = None,
) -> None:
    """The best trial's configuration, as JSON that `mtl-tune train --config FILE` reproduces; with --retrain,
    trained again (and with --save written as a model file)."""
    from storage.reports import best_config

    if save is not None and not retrain:
        raise fail("--save needs --retrain (the study keeps configurations, not weights)")
    with user_errors():
        doc = best_config(resolve_storage(storage_url), name, trial_number=trial)
    if retrain:
        _retrain(doc, save, device)
        return
    text = json.dumps(doc, indent=2)
    if output is not None:
        output.write_text(text + "\n")
        console.print(f"wrote {output}")
    if as_json or output is None:
        typer.echo(text)


def _retrain(doc: dict[str, Any], save: Path | None, device: str | None) -> None:
    from mtl_tune_cli.train_cmd import print_result
    from tuner.config import TrainConfig
    from tuner.problems import create_problem
    from tuner.train import train

    with user_errors():
        problem = create_problem(doc["problem"], doc["problem_options"])
        result = train(problem, TrainConfig.model_validate(doc["config"]), device=device)
        if save is not None:
            from tuner.checkpoint import save_model

            save_model(result, save, problem_options=doc["problem_options"])
    console.print(f"trial {doc['trial']} of {doc['study']}, trained again:")
    print_result(result, problem.tasks)
    if save is not None:
        console.print(f"wrote the trained model to {save}")


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage_url: StorageOption = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
) -> None:
    """Every trial: number, state, values, parameters, per-task final metrics, duration."""
    from storage.reports import export_trials

    if fmt not in ("csv", "json"):
        raise fail(f"--format: expected csv or json, got {fmt!r}")
    with user_errors():
        text = export_trials(resolve_storage(storage_url), name, fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage_url: StorageOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a study, its trials and its recorded metrics."""
    from storage.reports import delete_study

    if not yes:
        typer.confirm(f"delete study {name!r} and all its trials?", abort=True)
    with user_errors():
        delete_study(resolve_storage(storage_url), name)
    console.print(f"deleted {name}")
