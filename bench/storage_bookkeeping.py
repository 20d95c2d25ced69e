"""Storage bookkeeping per trial: everything a worker does for a trial except training.

A 20-epoch, 3-task trial whose training is replaced by a stub that reports 20 epochs instantly, run through the
real worker path (claim, load study, ask, suggest, per-epoch metrics + heartbeat + report + prune check, tell,
summary) on SQLite and PostgreSQL. For reference, Optuna alone: ask + 4 suggestions + 20 reports + tell.
Target: <= 20 ms per trial. Also: worker scaling, trials per minute with 1 and 2 worker processes.

    python bench/storage_bookkeeping.py [--trials 40] [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import optuna
import psycopg

import storage
from cli.worker_cmd import worker_command
from storage.epochs import record_epoch
from tuner.study import StudySpec, Worker, WorkerSettings, create_study
from tuner.study import _trial as trial_module
from tuner.train import EpochReport, TaskEpoch, TrainResult

EPOCHS, TASKS = 20, ("left", "right", "sum")


def fake_train(problem: object, config: object, *, device: object = None, on_epoch_end: Callable | None = None):
    """Reports EPOCHS epochs of 3 tasks at once, improving so Hyperband keeps it: what is left is bookkeeping."""
    result = TrainResult("multi-digits", config, "cpu", dict.fromkeys(TASKS, 1.0))  # type: ignore[arg-type]
    for epoch in range(EPOCHS):
        value = 1.0 / (epoch + 1)
        tasks = {t: TaskEpoch(value, value, 0.5, 1.0, None, None) for t in TASKS}
        report = EpochReport(epoch, tasks, value)
        result.history.append(report)
        if on_epoch_end is not None:
            on_epoch_end(report)
    return result


def bookkeeping_ms(url: str, n_trials: int) -> list[float]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    # Random sampling keeps the sampler's own compute (TPE fits on every trial) out of a storage measurement;
    # Hyperband, the default pruner, makes Optuna read the study's intermediate values at its rungs.
    spec = StudySpec(
        name=name, problem="multi-digits", n_trials=n_trials, epochs=EPOCHS, sampler="random", pruner="hyperband"
    )
    create_study(url, spec, source="cli")
    worker = Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True))
    times: list[float] = []
    original = worker._step

    def timed() -> bool:  # one worker step: find the job, claim a slot, run the trial, record it
        start = time.perf_counter()
        busy = original()
        times.append((time.perf_counter() - start) * 1000)
        return busy

    worker._step = timed  # type: ignore[method-assign]
    with mock.patch.object(trial_module, "train", fake_train):
        worker.run()
    return times[3:-1]  # the first trials pay for imports and caches; the last step only finds the study done


def epoch_transaction_ms(url: str, n_epochs: int) -> list[float]:
    """The per-epoch transaction alone: 3 metric rows, Optuna's intermediate value, the job and trial check."""
    name = f"epoch-{uuid.uuid4().hex[:6]}"
    create_study(url, StudySpec(name=name, problem="multi-digits", n_trials=1, epochs=EPOCHS), source="cli")
    rdb = storage.optuna_storage(url)
    study = optuna.load_study(study_name=name, storage=rdb)
    trial = study.ask()
    rdb.hold(trial._trial_id, rdb.get_study_id_from_name(name))
    with storage.session_scope(url) as session:
        job_id = storage.get_job(session, name).id
    rows = [{"task": t, "train_loss": 0.5, "val_loss": 0.5, "metric": 0.5, "weight": 1.0} for t in TASKS]
    times = []
    for epoch in range(n_epochs):
        start = time.perf_counter()
        trial.report(0.5, epoch)
        record_epoch(url, rdb, job_id=job_id, trial_id=trial._trial_id, trial_number=0, epoch=epoch, rows=rows)
        times.append((time.perf_counter() - start) * 1000)
    study.tell(trial, 0.5)
    return times[3:]


def optuna_only_ms(url: str, n_trials: int) -> list[float]:
    study = optuna.create_study(storage=url, study_name=f"ref-{uuid.uuid4().hex[:6]}")
    times = []
    for _ in range(n_trials):
        start = time.perf_counter()
        trial = study.ask()
        for p in ("a", "b", "c", "d"):
            trial.suggest_float(p, 1e-4, 1.0, log=True)
        for step in range(EPOCHS):
            trial.report(1.0 / (step + 1), step)
        study.tell(trial, 0.5)
        times.append((time.perf_counter() - start) * 1000)
    return times[3:]


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    dsn = storage.normalize_url(admin_url).replace("postgresql+psycopg://", "postgresql://")
    name = f"mtl_tune_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield storage.normalize_url(admin_url).rsplit("/", 1)[0] + "/" + name
    finally:
        storage.dispose_engines()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scaling(url: str, trials: int) -> dict[int, float]:
    """Trials per minute of real 1-thread trials (gradnorm-toy, about a second each) with 1 and 2 workers."""
    out = {}
    for workers in (1, 2):
        name = f"scale-{workers}-{uuid.uuid4().hex[:4]}"
        spec = StudySpec(
            name=name,
            problem="gradnorm-toy",
            problem_options={"n_train": 1000, "n_val": 200},
            n_trials=trials,
            epochs=15,
            sampler="random",
            pruner="none",
        )
        create_study(url, spec, source="cli")
        cmd = worker_command(url, name, "--exit-when-idle", "--threads", "1", "--poll", "0.2")
        procs = [subprocess.Popen([*cmd, "--worker-index", str(i)], stdout=subprocess.DEVNULL) for i in range(workers)]
        for p in procs:
            p.wait()
        summaries = optuna.load_study(study_name=name, storage=url).get_trials()
        starts = [t.datetime_start for t in summaries if t.datetime_start]
        ends = [t.datetime_complete for t in summaries if t.datetime_complete]
        minutes = (max(ends) - min(starts)).total_seconds() / 60  # from first trial start: excludes imports
        out[workers] = len(ends) / minutes
    return out


def row(label: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"| {label} | {statistics.median(ms):.1f} | {q[18]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--scaling-trials", type=int, default=16)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        rows += [
            row("whole worker path, SQLite", bookkeeping_ms(url, args.trials)),
            row("one epoch's transaction, SQLite", epoch_transaction_ms(url, 20 * args.trials)),
            row("Optuna alone, SQLite", optuna_only_ms(url, args.trials)),
        ]
        sqlite_scaling = scaling(url, args.scaling_trials)
    with pg_database(args.pg) as url:
        rows += [
            row("whole worker path, PostgreSQL", bookkeeping_ms(url, args.trials)),
            row("one epoch's transaction, PostgreSQL", epoch_transaction_ms(url, 20 * args.trials)),
            row("Optuna alone, PostgreSQL", optuna_only_ms(url, args.trials)),
        ]
        pg_scaling = scaling(url, args.scaling_trials)
    print(f"\nBookkeeping per {EPOCHS}-epoch, {len(TASKS)}-task trial (ms, {args.trials} trials):\n")
    print("| path | p50 ms | p95 ms |\n|---|---|---|")
    print("\n".join(rows))
    print("\nWorker scaling (trials per minute, 1-thread trials):\n")
    print("| storage | 1 worker | 2 workers | speed-up |\n|---|---|---|---|")
    for label, s in (("SQLite", sqlite_scaling), ("PostgreSQL", pg_scaling)):
        print(f"| {label} | {s[1]:.1f} | {s[2]:.1f} | {s[2] / s[1]:.2f}x |")


if __name__ == "__main__":
    main()
