"""Training step time of every loss-weighting strategy relative to ``equal``.

Setup (issue #2): ``gradnorm-toy --tasks 10``, batch 100, CPU, one thread. Every strategy is built in this one
process and timed with ``tuner.train.train_step`` (the loop's own step). After a warm-up the strategies run in
interleaved rounds, in a rotating order, so that drifts of the machine (frequency, other processes) hit all of them
alike; the ratio is the median over rounds of each round's time divided by ``equal``'s time in the same round.
Time is the training thread's CPU time by default (``--clock cpu``), so that time spent waiting for a core on a
shared machine does not count; ``--clock wall`` measures wall-clock time. Prints a table; asserts nothing.

    .venv/bin/python bench/strategy_step_time.py [--rounds 40] [--steps 25] [--clock cpu|wall] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from tuner.config import TrainConfig
from tuner.problems import Split, create_problem
from tuner.train import build, resolve_config, train_step
from tuner.weighting import STRATEGIES

BASELINE = "equal"
# With one torch thread every kernel of a CPU step runs on the calling thread, so its CPU time is the step's cost.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}


def _runner(
    strategy_name: str,
    split: Split,
    batches: list[torch.Tensor],
    tasks: int,
    batch_size: int,
    clock: Callable[[], float],
) -> Callable[[int, int], float]:
    """A function running ``steps`` training steps from batch ``offset``; it returns seconds per step."""
    problem = create_problem("gradnorm-toy", {"tasks": tasks})
    config = resolve_config(problem, TrainConfig(strategy=strategy_name, batch_size=batch_size))
    model, strategy, optimizer = build(problem, config, torch.device("cpu"))
    inputs = [split.x[idx] for idx in batches]
    targets = [[split.y[name][idx] for name in problem.task_names] for idx in batches]

    def run(steps: int, offset: int) -> float:
        start = clock()
        for k in range(offset, offset + steps):
            train_step(model, strategy, optimizer, inputs[k % len(batches)], targets[k % len(batches)])
        return (clock() - start) / steps

    return run


def measure(
    rounds: int, steps: int, warmup: int, tasks: int, batch_size: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Per-step seconds of every strategy, one entry per round."""
    problem = create_problem("gradnorm-toy", {"tasks": tasks})
    split = problem.load().train
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    batches = [order[i : i + batch_size] for i in range(0, len(split) - batch_size + 1, batch_size)]
    runners = {name: _runner(name, split, batches, tasks, batch_size, clock) for name in STRATEGIES}
    for run in runners.values():
        run(warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(runners[name](steps, warmup + r * steps))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=25, help="steps per strategy per round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = measure(args.rounds, args.steps, args.warmup, args.tasks, args.batch_size, CLOCKS[args.clock])

    rows = summarise(times)
    title = (
        f"gradnorm-toy --tasks {args.tasks}, batch {args.batch_size}, CPU, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.steps} steps, {args.clock} clock"
    )
    headers = ("strategy", "step time (ms, median)", f"relative to {BASELINE}")
    cells = [(r.name, f"{r.median_ms:.2f}", f"{r.ratio:.2f}x") for r in rows]
    if args.markdown:
        print(f"{title}\n\n| {' | '.join(headers)} |\n|---|---:|---:|")
        for row in cells:
            print(f"| {' | '.join(row)} |")
        return
    table = Table(*headers, title=title)
    for row in cells:
        table.add_row(*row)
    Console().print(table)


@dataclass
class Row:
    name: str
    median_ms: float
    ratio: float


def summarise(times: dict[str, list[float]]) -> list[Row]:
    base = times[BASELINE]
    return [
        Row(
            name=name,
            median_ms=statistics.median(per_round) * 1e3,
            ratio=statistics.median(t / b for t, b in zip(per_round, base, strict=True)),
        )
        for name, per_round in times.items()
    ]


if __name__ == "__main__":
    main()
