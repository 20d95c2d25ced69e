"""End to end: ``mtl-tune study run`` against a plain Optuna script running the same training on the same kind of
SQLite file.

Both run 40 trials of ``uncertainty-toy`` (the default space, grouped multivariate TPE, no pruner, every epoch
reported to Optuna) in a fresh process, as a user would start them; the plain script calls
``tuner.train.train`` in ``study.optimize``. Both use ``--threads`` torch threads (default: torch's own default,
every core, which is also what one local worker of ``study run`` takes). Wall time and CPU time (user + system of the
process and its children, from ``getrusage``) are medians over rounds, which alternate the two in a rotating
order. Prints a table; asserts nothing.

    .venv/bin/python bench/study_overhead.py [--rounds 3] [--trials 40] [--epochs 5] [--threads 0] [--markdown]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

OPTIONS = {"n_train": 1000, "n_val": 300}

PLAIN = """
import sys
import optuna
import torch

from tuner.problems import create_problem
from tuner.study import resolve_space, suggest_config
from tuner.train import train

optuna.logging.set_verbosity(optuna.logging.WARNING)
url, trials, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
problem = create_problem("uncertainty-toy", {options!r})
space = resolve_space(problem, None)
sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True)
study = optuna.create_study(study_name="plain", storage=url, sampler=sampler)


def objective(trial: optuna.Trial) -> float:
    config = suggest_config(trial, space, problem, epochs=epochs, seed=0)
    result = train(problem, config, device="cpu", on_epoch_end=lambda r: trial.report(r.objective, r.epoch))
    return result.objective


study.optimize(objective, n_trials=trials)
"""


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system of the command and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _mtl_tune(db: Path, trials: int, epochs: int, threads: int) -> list[str]:
    options = [arg for k, v in OPTIONS.items() for arg in ("--option", f"{k}={v}")]
    return [
        str(Path(sys.executable).with_name("mtl-tune")),
        "study",
        "run",
        "--problem",
        "uncertainty-toy",
        *options,
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--pruner",
        "none",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--storage",
        f"sqlite:///{db}",
        *(["--threads", str(threads)] if threads else []),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads of both (0: torch's default)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"mtl-tune study run": [], "plain Optuna script": []}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "plain.py"
        script.write_text(PLAIN.format(options=OPTIONS))
        for r in range(args.rounds):
            commands = {
                "mtl-tune study run": _mtl_tune(Path(tmp) / f"mtl-{r}.db", args.trials, args.epochs, args.threads),
                "plain Optuna script": [
                    sys.executable,
                    str(script),
                    f"sqlite:///{Path(tmp) / f'plain-{r}.db'}",
                    str(args.trials),
                    str(args.epochs),
                    str(args.threads),
                ],
            }
            order = list(commands) if r % 2 == 0 else list(reversed(commands))
            for name in order:
                results[name].append(_timed(commands[name]))
    base_wall = statistics.median(w for w, _ in results["plain Optuna script"])
    base_cpu = statistics.median(c for _, c in results["plain Optuna script"])
    rows = []
    for name, runs in results.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        rows.append((name, f"{wall:.1f}", f"{wall / base_wall:.2f}", f"{cpu:.1f}", f"{cpu / base_cpu:.2f}"))
    header = ("run", "wall s", "wall ×", "CPU s", "CPU ×")
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    table = Table(*header, title=f"{args.trials} trials × {args.epochs} epochs, median of {args.rounds} rounds")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
