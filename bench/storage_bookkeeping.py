"""Storage bookkeeping per trial: everything a worker does for a trial except training.

A 20-epoch, 3-task trial whose training is replaced by a stub that reports 20 epochs instantly, run through the
real worker step (claim a slot, ask, suggest, the trial's start, one transaction per epoch with the stop check,
the pruner at its rungs, tell with the claim and summary) on SQLite and PostgreSQL. Also: one epoch's transaction
alone, queued and waited for, and Optuna alone for reference: ask + 4 suggestions + 20 reports + tell. Target: <= 20 ms
per trial. Then worker scaling, steady-state trials per minute with 1 and 2 worker processes, beside plain
training loops without storage (the machine's ceiling).

    python bench/storage_bookkeeping.py [--trials 40] [--scaling-trials 24] [--rounds 3] [--pg URL]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from unittest import mock

import optuna
import psycopg
from sqlalchemy import select

import storage
from api.workers import worker_environment
from mtl_tune_cli.worker_cmd import worker_command
from storage.epochs import TrialRecorder
from tuner.study import StudySpec, Worker, WorkerSettings, create_study
from tuner.study import _trial as trial_module
from tuner.train import EpochReport, TaskEpoch, TrainResult

EPOCHS, TASKS = 20, ("left", "right", "sum")


def fake_train(
    problem: object, config: object, *, device: object = None, on_epoch_end: Callable | None = None, **_: object
):
    """Reports EPOCHS epochs of 3 tasks at once, improving so Hyperband keeps it: what is left is bookkeeping."""
    result = TrainResult("multi-digits", config, "cpu", dict.fromkeys(TASKS, 1.0))  # type: ignore[arg-type]
    for epoch in range(EPOCHS):
        value = 1.0 / (epoch + 1)
        tasks = {t: TaskEpoch(value, value, 0.5, 1.0) for t in TASKS}
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
        name=name,
        problem="multi-digits",
        n_trials=n_trials,
        epochs=EPOCHS,
        sampler="random",
        pruner="hyperband",
        confirm_seeds=0,  # trials' bookkeeping only: confirmation runs would train for real after the target
    )
    create_study(url, spec, source="cli")
    worker = Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True))
    times: list[float] = []
    original = worker._step

    def timed() -> bool:  # one worker step: claim a slot, run the trial, record it
        start = time.perf_counter()
        busy = original()
        times.append((time.perf_counter() - start) * 1000)
        return busy

    worker._step = timed  # type: ignore[method-assign]
    with mock.patch.object(trial_module, "train", fake_train):
        worker.run()
    return times[3:-1]  # the first trials pay for imports and caches; the last step only finds the study done


def epoch_transaction_ms(url: str, n_epochs: int) -> list[float]:
    """One epoch's transaction alone, queued and waited for: 3 metric rows, Optuna's intermediate value, the job and
    trial check."""
    name = f"epoch-{uuid.uuid4().hex[:6]}"
    spec = StudySpec(name=name, problem="multi-digits", n_trials=1, epochs=EPOCHS, confirm_seeds=0)
    create_study(url, spec, source="cli")
    claim = storage.claim_slot(url, study_name=name, worker="bench", grace_seconds=60)
    assert claim is not None
    rdb = storage.worker_storage(url)
    study = optuna.load_study(study_name=name, storage=rdb)
    trial = study.ask()
    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
    study_id = rdb.get_study_id_from_name(name)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    recorder = TrialRecorder(
        url, rdb, job_id=job.id, job_created_at=job.created_at, claim_id=claim, trial_id=trial_id, trial_number=0
    )
    rdb.hold(trial_id, study_id, finisher=recorder.finish)
    rows = [{"task": t, "train_loss": 0.5, "val_loss": 0.5, "metric": 0.5, "weight": 1.0} for t in TASKS]
    times = []
    for epoch in range(n_epochs):
        start = time.perf_counter()
        trial.report(0.5, epoch)
        recorder.epoch(epoch, rows)
        recorder.flush()
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


#: Loss-weighting strategies, whose steps cost about equal's: a gradient aggregator's costs about twice as much, so
#: which strategies the sampler drew would show in the trials per minute, not the storage.
CHEAP_STRATEGIES = ["equal", "static", "uncertainty", "gradnorm", "dwa"]


def scaling(url: str, trials: int) -> dict[int, float]:
    """Steady-state trials per minute of real 1-thread trials (gradnorm-toy's defaults, about 0.7 s each) with
    1 and 2 workers.

    Counted while every worker is busy: from the moment the last worker claims its first trial to the moment the
    first worker finishes its last one. Start-up (imports, data) and the final drain, when one worker has nothing
    left while the other finishes, are not throughput.
    """
    out = {}
    for workers in (1, 2):
        name = f"scale-{workers}-{uuid.uuid4().hex[:4]}"
        spec = StudySpec(name=name, problem="gradnorm-toy", n_trials=trials, sampler="random", pruner="none",
                         space={"strategy": CHEAP_STRATEGIES}, confirm_seeds=0)  # fmt: skip
        create_study(url, spec, source="cli")
        cmd = worker_command(name, "--exit-when-idle", "--threads", "1", "--poll", "0.2")
        env = worker_environment(url)
        procs = [subprocess.Popen([*cmd, "--worker-index", str(i)], stdout=subprocess.DEVNULL, env=env)
                 for i in range(workers)]  # fmt: skip
        for p in procs:
            p.wait()
        with storage.session_scope(url) as session:
            job = storage.get_job(session, name)
            claims = session.scalars(select(storage.TrialClaim).where(storage.TrialClaim.job_id == job.id)).all()
            spans = [(c.worker, c.claimed_at, c.finished_at) for c in claims if c.finished_at is not None]
        by_worker: dict[str, list[tuple[datetime, datetime]]] = {}
        for worker, claimed, finished in spans:
            by_worker.setdefault(worker, []).append((claimed, finished))
        assert len(by_worker) == workers, "every worker should have run trials"
        start = max(min(c for c, _ in runs) for runs in by_worker.values())
        end = min(max(f for _, f in runs) for runs in by_worker.values())
        done = sum(start < finished <= end for _, _, finished in spans)
        out[workers] = done / ((end - start).total_seconds() / 60)
    return out


# The machine's own ceiling: the same training, no storage at all, in 1 and in 2 processes at once.
_PLAIN_TRAINING = """
import sys, time, torch
torch.set_num_threads(1)
from tuner.problems import create_problem
from tuner.study import baseline_config
from tuner.train import train
problem = create_problem("gradnorm-toy", {})
config = baseline_config(problem, epochs=problem.defaults.epochs, seed=0)
train(problem, config, device="cpu")
start, n = time.perf_counter(), int(sys.argv[1])
for _ in range(n):
    train(problem, config, device="cpu")
print(n / (time.perf_counter() - start) * 60)
"""


def plain_scaling(trials: int) -> dict[int, float]:
    """Trials per minute of plain training loops (1 thread, no storage) in 1 and 2 processes."""
    out = {}
    root = str(Path(__file__).resolve().parent.parent)
    for processes in (1, 2):
        cmd = [sys.executable, "-c", _PLAIN_TRAINING, str(trials)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=root, text=True) for _ in range(processes)]
        out[processes] = sum(float(p.communicate()[0]) for p in procs)
    return out


def row(label: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"| {label} | {statistics.median(ms):.1f} | {q[18]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--scaling-trials", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="scaling rounds; the table shows the median")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    rows = []
    plain = "no storage (plain training loops)"
    speedups: dict[str, list[dict[int, float]]] = {plain: [], "SQLite": [], "PostgreSQL": []}
    with tempfile.TemporaryDirectory() as tmp, pg_database(args.pg) as pg_url:
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for label, url in (("SQLite", sqlite_url), ("PostgreSQL", pg_url)):
            rows += [
                row(f"whole worker path, {label}", bookkeeping_ms(url, args.trials)),
                row(f"one epoch's transaction, waited for, {label}", epoch_transaction_ms(url, 20 * args.trials)),
                row(f"Optuna alone, {label}", optuna_only_ms(url, args.trials)),
            ]
        # Rounds interleave the three, so that the machine's own ups and downs touch them alike.
        for _ in range(args.rounds):
            speedups[plain].append(plain_scaling(args.scaling_trials // 2))
            speedups["SQLite"].append(scaling(sqlite_url, args.scaling_trials))
            speedups["PostgreSQL"].append(scaling(pg_url, args.scaling_trials))
    print(f"\nBookkeeping per {EPOCHS}-epoch, {len(TASKS)}-task trial (ms, {args.trials} trials):\n")
    print("| path | p50 ms | p95 ms |\n|---|---|---|")
    print("\n".join(rows))
    print(f"\nWorker scaling, trials per minute of 1-thread trials (median of {args.rounds} rounds):\n")
    print("| storage | 1 worker | 2 workers | speed-up | speed-up per round |\n|---|---|---|---|---|")
    for label, runs in speedups.items():
        one, two = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
        ratios = sorted(r[2] / r[1] for r in runs)
        per_round = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"| {label} | {one:.1f} | {two:.1f} | {statistics.median(ratios):.2f}x | {per_round} |")


if __name__ == "__main__":
    main()
