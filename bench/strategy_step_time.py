"""Training step time of every loss-weighting strategy relative to ``equal``, on several problems.

Problems: ``gradnorm-toy`` with 2, 3 and 10 tasks (batch 100), ``multi-digits`` (a small CNN trunk ending in an
``nn.Linear``, batch 128) and ``dense-scenes`` (``bench/dense_problem.py``: per-pixel segmentation and depth with conv
decoder heads, batch 32; its last shared layer is a ``Conv2d`` with a spatial output). CPU, one thread by default.
For each problem every strategy is built in this one process and timed with ``tuner.train.train_step`` (the loop's
own step). After a warm-up the strategies run in interleaved rounds, in a rotating order, so that drifts of the
machine (frequency, other processes) hit all of them alike; the ratio is the median over rounds of each round's time
divided by ``equal``'s time in the same round. Time is the training thread's CPU time by default (``--clock cpu``),
so that time spent waiting for a core on a shared machine does not count; ``--clock wall`` measures wall-clock time.
Prints a table; asserts nothing.

    .venv/bin/python bench/strategy_step_time.py [--problems toy2,toy3,toy10,digits,dense]
        [--strategies equal,gradnorm] [--rounds 20] [--steps 10] [--clock cpu|wall] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from dense_problem import DenseScenes
from rich.console import Console
from rich.table import Table

from tuner.config import TrainConfig
from tuner.problems import Problem, Split, create_problem
from tuner.train import build, resolve_config, train_step
from tuner.weighting import STRATEGIES

BASELINE = "equal"
# With one torch thread every kernel of a CPU step runs on the calling thread, so its CPU time is the step's cost.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}
PROBLEMS: dict[str, tuple[str, Callable[[], Problem]]] = {
    "toy2": ("gradnorm-toy T=2", lambda: create_problem("gradnorm-toy", {"tasks": 2})),
    "toy3": ("gradnorm-toy T=3", lambda: create_problem("gradnorm-toy", {"tasks": 3})),
    "toy10": ("gradnorm-toy T=10", lambda: create_problem("gradnorm-toy", {"tasks": 10})),
    "digits": ("multi-digits", lambda: create_problem("multi-digits", {"n_train": 1024, "n_val": 10, "n_test": 10})),
    "dense": ("dense-scenes (conv)", lambda: DenseScenes.create({"n_train": 256, "n_val": 8})),
}

Runner = Callable[[int, int], float]


def _runner(problem: Problem, strategy: str, batches: list[tuple[Any, Any]], clock: Callable[[], float]) -> Runner:
    """A function running ``steps`` training steps from batch ``offset``; it returns seconds per step."""
    config = resolve_config(problem, TrainConfig(strategy=strategy))
    run = build(problem, config, torch.device("cpu"))

    def steps_from(steps: int, offset: int) -> float:
        start = clock()
        for k in range(offset, offset + steps):
            train_step(run, *batches[k % len(batches)])
        return (clock() - start) / steps

    return steps_from


def measure(
    problem: Problem, strategies: list[str], rounds: int, steps: int, warmup: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Per-step seconds of every strategy on ``problem``, one entry per round."""
    split = problem.load().train
    assert isinstance(split, Split)
    batch_size = resolve_config(problem, TrainConfig()).batch_size
    assert batch_size is not None
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    batches = [split.take(order[i : i + batch_size]) for i in range(0, len(split) - batch_size + 1, batch_size)]
    runners = {name: _runner(problem, name, batches, clock) for name in strategies}
    for run in runners.values():
        run(warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        for name in strategies[r % len(strategies) :] + strategies[: r % len(strategies)]:
            times[name].append(runners[name](steps, warmup + r * steps))
    return times


@dataclass
class Cell:
    median_ms: float
    ratio: float


def summarise(times: dict[str, list[float]]) -> dict[str, Cell]:
    base = times[BASELINE]
    return {
        name: Cell(
            median_ms=statistics.median(per_round) * 1e3,
            ratio=statistics.median(t / b for t, b in zip(per_round, base, strict=True)),
        )
        for name, per_round in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated, of {', '.join(PROBLEMS)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated; equal is always run")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="steps per strategy per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = args.problems.split(",")
    strategies = [BASELINE, *(s for s in args.strategies.split(",") if s != BASELINE)]
    results = {
        key: summarise(
            measure(PROBLEMS[key][1](), strategies, args.rounds, args.steps, args.warmup, CLOCKS[args.clock])
        )
        for key in keys
    }
    title = (
        f"step time relative to {BASELINE} (ms per step in brackets), CPU, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.steps} steps, {args.clock} clock"
    )
    show([PROBLEMS[key][0] for key in keys], results, title, args.markdown)


def show(columns: list[str], results: dict[str, dict[str, Cell]], title: str, markdown: bool) -> None:
    """One row per strategy, one column per problem: the ratio to equal, the median milliseconds in brackets."""
    headers = ["strategy", *columns]
    names = list(next(iter(results.values())))
    rows = [
        [name, *(f"{cells[name].ratio:.2f}x ({cells[name].median_ms:.2f})" for cells in results.values())]
        for name in names
    ]
    if markdown:
        print(f"{title}\n\n| {' | '.join(headers)} |\n|---|{'---:|' * len(columns)}")
        for row in rows:
            print(f"| {' | '.join(row)} |")
        return
    table = Table(*headers, title=title)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
