"""REST API latency on a large study: p50/p95 per route against a running ``mtl-tune serve`` (real uvicorn, real HTTP).

Setup: one study of N trials (default 10,000), each with 20 epochs x 3 tasks of per-epoch metrics
(pruned and failed trials stop earlier), 80% complete / 15% pruned / 5% failed. The study is created through
Optuna and its first ``--optuna-trials`` trials (default 200) are added through Optuna's API, so the routes that
read Optuna (one trial's config, the baseline, parameter distributions for importances) find real records; the
rest of the trials are bulk-inserted into mtl-tune's own tables (``trial_summaries``, ``epoch_metrics``,
``trial_claims``), which is what the pages read. Adding 100,000 trials through Optuna's API would take about half
an hour (14 ms each); the API never reads them per request.

Each route is requested ``--warmup`` times, then ``--repeat`` times; the table shows the server time (the app's own
``Server-Timing`` header) and the client-observed time, p50 and p95, and the response size. "cold" is the very first
request of a freshly started server. Prints a table; asserts nothing.

    .venv/bin/python bench/api_speed.py [--backend sqlite|postgresql] [--trials 10000] [--objective scalar|pareto]
        [--repeat 30] [--keep DIR] [--pg-admin "host=127.0.0.1 user=postgres dbname=postgres"]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import storage  # noqa: E402
from storage import EpochMetric, TrialClaim, TrialSummary  # noqa: E402

STUDY = "bench"
TASKS = {"t0": "rmse", "t1": "rmse", "t2": "accuracy"}
STRATEGIES = ["equal", "static", "uncertainty", "gradnorm", "dwa"]
EPOCHS = 20
BATCH = 20_000
SPACE = {
    "strategy": STRATEGIES, "weights": {"low": 0.1, "high": 10.0, "log": True},
    "lr_shared": {"low": 1e-4, "high": 1e-1, "log": True}, "lr_heads": {"low": 1e-4, "high": 1e-1, "log": True},
    "lr_head": None, "lr_weighting": {"low": 1e-3, "high": 1e-1, "log": True},
    "strategies": {"gradnorm": {"alpha": {"low": 0.0, "high": 3.0, "log": False}}},
    "chain": None, "weight_decay": 0.0, "batch_size": 64,
    "optimizer": "adam",
}  # fmt: skip


# --- building the study ------------------------------------------------------------------------------------------


def _params(rng: random.Random, baseline: bool) -> dict[str, Any]:
    if baseline:
        return {}
    strategy = rng.choice(STRATEGIES)
    params: dict[str, Any] = {"strategy": strategy}
    if strategy == "static":
        params |= {f"weight_{t}": math.exp(rng.uniform(math.log(0.1), math.log(10))) for t in TASKS}
    if strategy == "gradnorm":
        params["gradnorm.alpha"] = rng.uniform(0, 3)
    if strategy in ("uncertainty", "gradnorm"):
        params["lr_weighting"] = math.exp(rng.uniform(math.log(1e-3), math.log(1e-1)))
    params["lr_shared"] = math.exp(rng.uniform(math.log(1e-4), math.log(1e-1)))
    params["lr_heads"] = math.exp(rng.uniform(math.log(1e-4), math.log(1e-1)))
    return params


def _distributions(params: dict[str, Any]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict[str, Any] = {}
    for name in params:
        if name == "strategy":
            out[name] = CategoricalDistribution(STRATEGIES)
        elif name == "gradnorm.alpha":
            out[name] = FloatDistribution(0.0, 3.0)
        elif name.startswith("weight_"):
            out[name] = FloatDistribution(0.1, 10.0, log=True)
        elif name == "lr_weighting":
            out[name] = FloatDistribution(1e-3, 1e-1, log=True)
        else:
            out[name] = FloatDistribution(1e-4, 1e-1, log=True)
    return out


def _trial(n: int, rng: random.Random, objective: str, start: datetime) -> dict[str, Any]:
    """One trial's summary record plus what its epoch rows and claim need."""
    params = _params(rng, baseline=n == 0)
    roll = rng.random()
    state = "complete" if n == 0 or roll < 0.8 else "pruned" if roll < 0.95 else "failed"
    if state == "pruned" and objective == "pareto":  # Optuna cannot prune multi-objective studies
        state = "complete"
    epochs = EPOCHS if state == "complete" else rng.randint(1, EPOCHS - 1)
    lr = params.get("lr_shared", 1e-2)
    quality = abs(math.log10(lr) + 2.5) / 3 + rng.random() * 0.3  # best near lr 3e-3
    metrics = {"t0": 1 + quality, "t1": 0.5 + quality * rng.random(), "t2": max(0.0, 0.95 - quality / 2)}
    values = None
    if state != "failed":
        values = [0.5 + quality] if objective == "scalar" else [metrics[t] for t in TASKS]
    tasks = {t: {"val_loss": metrics[t] ** 2, "metric": metrics[t], "weight": rng.uniform(0.2, 2), "sigma": None}
             for t in TASKS}  # fmt: skip
    duration = rng.uniform(5, 60) * epochs / EPOCHS
    began = start + timedelta(seconds=n * 3)
    return {
        "trial_number": n, "state": state, "values": values, "objective": values[0] if values else None,
        "params": params, "task_metrics": None if state == "failed" else tasks, "duration_s": duration,
        "started_at": began, "finished_at": began + timedelta(seconds=duration), "epochs": epochs,
    }  # fmt: skip


def _epoch_rows(job_id: int, trial: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    for epoch in range(trial["epochs"]):
        for task, metric in TASKS.items():
            loss = 2.0 / (epoch + 1) + rng.random() * 0.1
            yield {
                "job_id": job_id, "trial_number": trial["trial_number"], "epoch": epoch, "task": task,
                "train_loss": loss, "val_loss": loss * 1.1, "metric": 1 - loss / 3 if metric == "accuracy" else loss,
                "weight": rng.uniform(0.2, 2),
                "series": {"sigma": rng.uniform(0.5, 3), "grad_norm": rng.uniform(0.1, 5)},
            }  # fmt: skip


def build(url: str, n_trials: int, objective: str, optuna_trials: int, console: Console) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    storage.ensure_schema(url)
    directions = ["minimize"] if objective == "scalar" else ["minimize", "minimize", "maximize"]
    study = optuna.create_study(study_name=STUDY, storage=storage.optuna_storage(url), directions=directions)
    study.set_user_attr("metric_names", TASKS)
    with storage.session_scope(url) as session:
        job = storage.create_job(
            session, study_name=STUDY, problem="bench", problem_options={}, space=SPACE, objective=objective,
            directions=directions, sampler="tpe", pruner="hyperband" if objective == "scalar" else "none",
            epochs=EPOCHS, n_trials=n_trials, seed=0, source="cli",
        )  # fmt: skip
        job.status = "completed"
        job_id = job.id
    rng = random.Random(0)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    trials = [_trial(n, rng, objective, start) for n in range(n_trials)]
    study.add_trials([_frozen(t, objective) for t in trials[:optuna_trials]])
    t1 = time.perf_counter()
    engine = storage.get_engine(url)
    with engine.begin() as conn:
        summaries = ({"job_id": job_id, **{k: v for k, v in t.items() if k != "epochs"}} for t in trials)
        for chunk in _chunks(summaries):
            conn.execute(insert(TrialSummary), chunk)
        claims = ({"job_id": job_id, "worker": f"bench:{t['trial_number'] % 8}", "state": t["state"],
                   "trial_number": t["trial_number"], "claimed_at": t["started_at"], "heartbeat_at": t["finished_at"],
                   "finished_at": t["finished_at"]} for t in trials)  # fmt: skip
        for chunk in _chunks(claims):
            conn.execute(insert(TrialClaim), chunk)
        epoch_rows = (row for t in trials for row in _epoch_rows(job_id, t, rng))
        n_rows = 0
        for chunk in _chunks(epoch_rows):
            conn.execute(insert(EpochMetric).execution_options(render_nulls=True), chunk)
            n_rows += len(chunk)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    console.print(
        f"built {n_trials} trials ({optuna_trials} through Optuna in {t1 - t0:.0f} s), {n_rows} epoch rows in "
        f"{time.perf_counter() - t1:.0f} s"
    )


def _frozen(trial: dict[str, Any], objective: str) -> Any:
    import optuna
    from optuna.trial import TrialState

    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}[trial["state"]]
    attrs: dict[str, Any] = {"config": {"strategy": trial["params"].get("strategy", "equal"), "epochs": EPOCHS}}
    if trial["task_metrics"]:
        attrs["tasks"] = trial["task_metrics"]
    if trial["trial_number"] == 0:
        attrs["baseline"] = True
    values = trial["values"]  # a pruned trial keeps its last reported value, as Optuna records it
    intermediate = {trial["epochs"] - 1: values[0]} if state == TrialState.PRUNED else {}
    return optuna.trial.create_trial(
        state=state, params=trial["params"], distributions=_distributions(trial["params"]), values=values,
        user_attrs=attrs, intermediate_values=intermediate,
    )  # fmt: skip


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- databases ---------------------------------------------------------------------------------------------------


@contextmanager
def database(backend: str, keep: Path | None, pg_admin: str) -> Iterator[tuple[str, bool]]:
    """A database URL and whether it already holds the study (``--keep`` reuses one)."""
    if backend == "sqlite":
        directory = keep or Path(tempfile.mkdtemp(prefix="mtl-tune-bench-"))
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "bench.db"
        yield f"sqlite:///{path}", path.exists()
        if keep is None:
            for p in directory.iterdir():
                p.unlink()
            directory.rmdir()
        return
    import psycopg

    name = f"mtl_tune_bench_{keep.name if keep else uuid.uuid4().hex[:8]}".replace("-", "_")
    info = psycopg.conninfo.conninfo_to_dict(pg_admin)
    with psycopg.connect(pg_admin, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
    host, port, user = info.get("host", "127.0.0.1"), info.get("port", 5432), info.get("user", "postgres")
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}", exists
    finally:
        storage.dispose_engines()
        if keep is None:
            with psycopg.connect(pg_admin, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- measuring ---------------------------------------------------------------------------------------------------


@contextmanager
def server(url: str) -> Iterator[httpx.Client]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mtl_tune_cli.main", "serve", "--workers", "0", "--port", str(port), "--storage", url,
           "--log-level", "warning"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MTL_TUNE_API_TOKEN"}
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


_TIMING = re.compile(r"app;dur=([\d.]+)")


def request(client: httpx.Client, path: str) -> tuple[float, float, int]:
    """(server ms, client ms, bytes) of one GET."""
    start = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    match = _TIMING.search(response.headers.get("server-timing", ""))
    return float(match.group(1)) if match else math.nan, elapsed, len(response.content)


def routes(n_trials: int) -> dict[str, str | tuple[str, ...]]:
    base = f"/api/studies/{STUDY}"
    return {
        "summary + first page (50)": (base, f"{base}/trials"),
        "GET study (summary)": base,
        "GET trials (first page of 50)": f"{base}/trials",
        "GET trials ?order=-objective": f"{base}/trials?order=-objective",
        "GET trials ?state=complete&order=objective": f"{base}/trials?state=complete&order=objective",
        "GET trials ?order=duration_s (no index)": f"{base}/trials?order=duration_s",
        f"GET trials ?offset={n_trials // 2}": f"{base}/trials?offset={n_trials // 2}",
        "GET trial (20 epochs x 3 tasks, in Optuna)": f"{base}/trials/50",
        "GET trial (20 epochs x 3 tasks, ours only)": f"{base}/trials/{n_trials - 10}",
        "GET history ?after=N-50 (incremental)": f"{base}/history?after={n_trials - 50}",
        "GET history (every trial)": f"{base}/history",
        "GET importance (cached)": f"{base}/importance",
        "GET studies (list)": "/api/studies",
        "GET health": "/api/health",
    }


def measure(client: httpx.Client, paths: str | tuple[str, ...], warmup: int, repeat: int) -> dict[str, float]:
    group = (paths,) if isinstance(paths, str) else paths
    for _ in range(warmup):
        for path in group:
            request(client, path)
    server_ms, client_ms, sizes = [], [], []
    for _ in range(repeat):
        results = [request(client, path) for path in group]
        server_ms.append(sum(r[0] for r in results))
        client_ms.append(sum(r[1] for r in results))
        sizes.append(sum(r[2] for r in results))
    return {"server_p50": _pct(server_ms, 50), "server_p95": _pct(server_ms, 95), "client_p50": _pct(client_ms, 50),
            "client_p95": _pct(client_ms, 95), "kb": statistics.median(sizes) / 1024}  # fmt: skip


def _importance(client: httpx.Client) -> tuple[dict[str, Any], float]:
    """Ask for importances and poll until the background computation is done."""
    start = time.perf_counter()
    path = f"/api/studies/{STUDY}/importance"
    result: dict[str, Any] = client.get(path).json()
    while result["status"] == "computing" and time.perf_counter() - start < 300:
        time.sleep(0.1)
        result = client.get(path).json()
    return result, time.perf_counter() - start


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--objective", choices=["scalar", "pareto"], default="scalar")
    parser.add_argument("--optuna-trials", type=int, default=200, help="trials also added through Optuna's API")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the database: a directory for SQLite, a name "
                        "suffix for PostgreSQL")  # fmt: skip
    parser.add_argument("--pg-admin", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    args = parser.parse_args()
    console = Console() if Console().is_terminal else Console(width=160)  # piped output: whole route names

    with database(args.backend, args.keep, args.pg_admin) as (url, exists):
        if not exists:
            build(url, args.trials, args.objective, min(args.optuna_trials, args.trials), console)
        storage.dispose_engines()
        with server(url) as client:
            cold = request(client, f"/api/studies/{STUDY}")
            importance, importance_s = _importance(client)  # first, so its computation does not overlap timings
            rows = {label: measure(client, paths, args.warmup, args.repeat) for label, paths in
                    routes(args.trials).items()}  # fmt: skip

    table = Table(title=f"{args.backend}, {args.trials:,} trials ({args.objective}), {EPOCHS} epochs x {len(TASKS)} "
                  f"tasks, HTTP against uvicorn, {args.repeat} requests per route")  # fmt: skip
    for column in ("route", "server p50 ms", "server p95 ms", "client p50 ms", "client p95 ms", "KB"):
        table.add_column(column, justify="left" if column == "route" else "right")
    table.add_row(
        "GET study, cold (first request)", f"{cold[0]:.1f}", "", f"{cold[1]:.1f}", "", f"{cold[2] / 1024:.1f}"
    )
    for label, r in rows.items():
        table.add_row(label, f"{r['server_p50']:.1f}", f"{r['server_p95']:.1f}", f"{r['client_p50']:.1f}",
                      f"{r['client_p95']:.1f}", f"{r['kb']:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"importance: {importance['status']} after {importance_s:.1f} s in the background, over "
                  f"{importance['n_trials']} trials ({importance.get('note') or 'all complete trials'})")  # fmt: skip


if __name__ == "__main__":
    main()
