"""Fuzz and load a running ``mtl-tune serve`` (real uvicorn, real HTTP): requests, 5xx, p50/p95 per route.

A temporary SQLite database gets a few real studies (trained by an in-process worker on tiny data: a finished
scalar study, a finished pareto study and a queued one); ``serve`` runs on it with no workers and an API token
(``MTL_TUNE_API_TOKEN``; ``MTL_TUNE_TOKEN_FILE`` points into the temporary directory), so that every request
carries the token and changes reach their handlers.

1. Load: after one request to each (cold starts are not load), ``--threads`` clients send ``--requests`` GETs per
   read route, all routes mixed, at the same time.
2. Fuzz: schemathesis generates valid and invalid requests from the server's own ``/openapi.json`` for every
   operation, round after round, until ``--fuzz-seconds`` have passed; a request naming a study is also sent with a
   seeded study's name, so generated parameters reach real data. Every response is checked for a 5xx, and those to
   valid requests against their documented schema.

Prints one table per part; a 5xx is listed with its request, and the server's log (with its traceback) is kept.
Asserts nothing.

    .venv/bin/python bench/api_fuzz_load.py [--fuzz-seconds 300] [--requests 200] [--threads 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import storage  # noqa: E402

TINY = {"n_train": 200, "n_val": 100}
QUICK_SPACE = {"strategy": ["equal", "static", "uncertainty", "gradnorm", "dwa"]}
SEEDED = ("fuzz-scalar", "fuzz-pareto", "fuzz-queued")
EXAMPLES_PER_ROUND = 10


# --- the database and the server ---------------------------------------------------------------------------------


def seed(url: str) -> None:
    """Three studies: two run to their targets by an in-process worker, one left queued."""
    import optuna

    from tuner.study import StudySpec, Worker, WorkerSettings, create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = [
        {"name": SEEDED[0], "problem": "uncertainty-toy", "n_trials": 8, "sampler": "random"},
        {"name": SEEDED[1], "problem": "uncertainty-toy", "n_trials": 4, "objective": "pareto"},
        {"name": SEEDED[2], "problem": "uncertainty-toy", "n_trials": 5},
    ]
    for fields in specs:
        spec = StudySpec.model_validate({"problem_options": TINY, "epochs": 2, "space": QUICK_SPACE, **fields})
        name = create_study(url, spec, source="cli").study_name
        if name != SEEDED[2]:
            Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu")).run()
    storage.dispose_engines()


@contextmanager
def server(url: str, directory: Path, token: str) -> Iterator[str]:
    """``mtl-tune serve`` with no workers on a free port; its output goes to ``serve.log`` in ``directory``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mtl_tune_cli.main", "serve", "--workers", "0", "--host", "127.0.0.1", "--port",
           str(port), "--storage", url, "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "MTL_TUNE_API_TOKEN": token, "MTL_TUNE_TOKEN_FILE": str(directory / "api-token"),
           "MTL_TUNE_DATA_DIR": str(directory)}  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with (directory / "serve.log").open("wb") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the server did not start; see {directory / 'serve.log'}")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


# --- tallies -----------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Per route: every request's status and client-observed time."""

    ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, status: int, ms: float) -> None:
        with self.lock:
            self.ms[route].append(ms)
            self.statuses[route].append(status)

    def total(self) -> int:
        return sum(len(s) for s in self.statuses.values())

    def server_errors(self) -> int:
        return sum(1 for s in self.statuses.values() for code in s if code >= 500)


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def table(title: str, tally: Tally, *, statuses: bool) -> Table:
    out = Table(title=title)
    columns = ["route", "requests", "5xx", *(["statuses"] if statuses else []), "p50 ms", "p95 ms"]
    for column in columns:
        out.add_column(column, justify="left" if column in ("route", "statuses") else "right")
    for route in sorted(tally.ms):
        codes = tally.statuses[route]
        counts = " ".join(f"{c}×{codes.count(c)}" for c in sorted(set(codes)))
        row = [route, str(len(codes)), str(sum(c >= 500 for c in codes)), *([counts] if statuses else [])]
        out.add_row(*row, f"{_pct(tally.ms[route], 50):.1f}", f"{_pct(tally.ms[route], 95):.1f}")
    all_ms = [m for ms in tally.ms.values() for m in ms]
    total = ["all", str(tally.total()), str(tally.server_errors()), *([""] if statuses else [])]
    out.add_row(*total, f"{_pct(all_ms, 50):.1f}", f"{_pct(all_ms, 95):.1f}", style="bold")
    return out


# --- load --------------------------------------------------------------------------------------------------------


def read_routes() -> dict[str, str]:
    base = f"/api/studies/{SEEDED[0]}"
    return {
        "GET /api/health": "/api/health",
        "GET /api/problems": "/api/problems",
        "GET /api/strategies": "/api/strategies",
        "GET /api/studies": "/api/studies",
        "GET /api/studies/{name}": base,
        "GET /api/studies/{name} (pareto)": f"/api/studies/{SEEDED[1]}",
        "GET /api/studies/{name}/trials": f"{base}/trials",
        "GET /api/studies/{name}/trials?order=-objective": f"{base}/trials?order=-objective",
        "GET /api/studies/{name}/trials/{number}": f"{base}/trials/1",
        "GET /api/studies/{name}/history": f"{base}/history",
        "GET /api/studies/{name}/importance": f"{base}/importance",
        "GET / (dashboard)": "/",
    }


def load(base: str, token: str, per_route: int, threads: int) -> tuple[Tally, float]:
    """Every read route ``per_route`` times, shuffled, from ``threads`` clients at once; (tally, seconds)."""
    jobs = [(route, path) for route, path in read_routes().items() for _ in range(per_route)]
    random.Random(0).shuffle(jobs)
    tally, local = Tally(), threading.local()

    def one(job: tuple[str, str]) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"})
        route, path = job
        start = time.perf_counter()
        try:
            status = local.client.get(path).status_code
        except httpx.TransportError:
            status = 599  # no response at all counts as a server error
        tally.add(route, status, (time.perf_counter() - start) * 1000)

    with httpx.Client(base_url=base, timeout=120) as client:  # one of each first: cold starts are not load
        for path in read_routes().values():
            client.get(path)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, jobs))
    return tally, time.perf_counter() - start


# --- fuzz --------------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    route: str
    status: int
    request: str
    detail: str = ""


@dataclass
class FuzzResult:
    tally: Tally
    errors: list[Finding] = field(default_factory=list)  # 5xx or no response
    mismatches: list[Finding] = field(default_factory=list)  # a response unlike its documented schema
    unsent: int = 0  # negative cases the HTTP client cannot send (e.g. a header value with a newline)
    rounds: int = 0


def fuzz(base: str, token: str, seconds: float, console: Console) -> FuzzResult:
    """Schemathesis cases for every operation, valid (positive) and invalid (negative) by turns, round after round
    until ``seconds`` have passed."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    headers = {"Authorization": f"Bearer {token}"}
    result = FuzzResult(Tally())
    tally = result.tally
    deadline = time.monotonic() + seconds
    session = requests.Session()

    def send(case: Any, route: str) -> None:
        start = time.perf_counter()
        try:
            response = case.call(base_url=base, session=session, headers=headers, timeout=60)
        except (requests.ConnectionError, requests.Timeout) as exc:  # no response: a finding, as a 5xx is
            tally.add(route, 599, (time.perf_counter() - start) * 1000)
            result.errors.append(Finding(route, 599, _describe(case), f"{type(exc).__name__}: {exc}"))
            return
        except Exception:  # the client refused to send it (invalid header, unserializable body)
            result.unsent += 1
            return
        tally.add(route, response.status_code, (time.perf_counter() - start) * 1000)
        if response.status_code >= 500:
            result.errors.append(Finding(route, response.status_code, _describe(case), response.text[:300]))
            return
        if case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE:
            return  # an invalid request's 4xx need not match a documented response
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            result.mismatches.append(Finding(route, response.status_code, _describe(case), detail))

    def tester(operation: Any, mode: GenerationMode) -> Any:
        route = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_ROUND, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: Any) -> None:
            if time.monotonic() >= deadline:
                return
            send(case, route)
            if "name" in (case.path_parameters or {}) and case.method.upper() != "DELETE":
                case.path_parameters = {**case.path_parameters, "name": random.choice(SEEDED)}
                send(case, route)

        return run

    # An operation without parameters or body has no invalid request: it is fuzzed with valid ones only.
    positive, negative = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
    runs = [tester(op, positive) for op in operations] + [tester(op, negative) for op in operations if _takes_input(op)]
    while time.monotonic() < deadline:
        for run in list(runs):
            try:
                run()
            except Unsatisfiable:  # parameters that admit no invalid value
                runs.remove(run)
        result.rounds += 1
        console.print(f"fuzz round {result.rounds}: {tally.total()} requests, {tally.server_errors()} 5xx",
                      highlight=False)  # fmt: skip
    return result


def _takes_input(operation: Any) -> bool:
    return any(True for _ in operation.iter_parameters()) or bool(operation.get_request_payload_content_types())


def _describe(case: Any) -> str:
    from schemathesis.core import NotSet

    body = "" if isinstance(case.body, NotSet) else f" body={str(case.body)[:200]!r}"
    query = f" query={case.query}" if case.query else ""
    return f"{case.method.upper()} {case.formatted_path}{query}{body}"


def schemathesis_version() -> str:
    from importlib.metadata import version

    return version("schemathesis")


# --- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz-seconds", type=float, default=300.0, help="how long schemathesis generates requests")
    parser.add_argument("--requests", type=int, default=200, help="GETs per read route in the load run")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients in the load run")
    parser.add_argument("--keep", type=Path, help="keep the database and the server log in this directory")
    args = parser.parse_args()
    console = Console() if Console().is_terminal else Console(width=160)
    directory = args.keep or Path(tempfile.mkdtemp(prefix="mtl-tune-fuzz-load-"))
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'studies.db'}"
    token = secrets.token_urlsafe(24)

    start = time.perf_counter()
    seed(url)
    console.print(f"seeded {len(SEEDED)} studies in {time.perf_counter() - start:.0f} s")
    with server(url, directory, token) as base:
        loaded, load_s = load(base, token, args.requests, args.threads)
        fuzzed = fuzz(base, token, args.fuzz_seconds, console)

    console.print(table(f"load: {args.threads} concurrent clients, {args.requests} GETs per route, SQLite, "
                        f"{loaded.total() / load_s:.0f} requests/s", loaded, statuses=False))  # fmt: skip
    title = f"fuzz: schemathesis {schemathesis_version()} over HTTP, {args.fuzz_seconds:.0f} s, {fuzzed.rounds} rounds"
    console.print(table(title, fuzzed.tally, statuses=True))
    console.print(f"negative cases the client could not send: {fuzzed.unsent}")
    console.print(f"responses to valid requests not matching their documented schema: {len(fuzzed.mismatches)}")
    for finding in fuzzed.mismatches[:10]:
        console.print(f"  {finding.status} {finding.request}\n    {finding.detail}", highlight=False)
    log = directory / "serve.log"
    if fuzzed.errors or loaded.server_errors():
        console.print(f"[bold red]{len(fuzzed.errors)} fuzz server errors[/]; the server's log is kept: {log}")
        for finding in fuzzed.errors[:20]:
            console.print(f"  {finding.status} {finding.request}\n    {finding.detail}", highlight=False)
    elif args.keep is None:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
