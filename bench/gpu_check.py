"""GPU check: every loss-weighting strategy trains on CUDA; step time, peak memory and host synchronisations.

Each strategy runs a warm-up and then ``--steps`` training steps (``tuner.train.train_step``, the loop's own step)
on ``gradnorm-toy --tasks 10`` with batch 100 by default. Step time comes from CUDA events; peak memory from
``torch.cuda.max_memory_allocated``; host synchronisations are counted with ``torch.cuda.set_sync_debug_mode``
("warn"), which flags every operation that makes the host wait for the GPU. Without CUDA it says so and exits 0.

    .venv/bin/python bench/gpu_check.py [--steps 300] [--problem gradnorm-toy] [--tasks 10] [--bf16]
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from tuner.config import TrainConfig
from tuner.problems import create_problem
from tuner.train import build, resolve_config, train_step
from tuner.weighting import STRATEGIES


@dataclass
class Measurement:
    step_ms: float
    peak_mib: float
    syncs_per_step: float
    final_weights: list[float]


def measure(strategy_name: str, args: argparse.Namespace) -> Measurement:
    device = torch.device("cuda")
    options = {"tasks": args.tasks} if args.problem == "gradnorm-toy" else {}
    problem = create_problem(args.problem, options)
    config = resolve_config(problem, TrainConfig(strategy=strategy_name, batch_size=args.batch_size, bf16=args.bf16))
    split = problem.load().train.to(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model, strategy, optimizer = build(problem, config, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 else None
    n_batches = max(1, len(split) // args.batch_size)
    batches = [torch.arange(i * args.batch_size, (i + 1) * args.batch_size, device=device) for i in range(n_batches)]

    def step(k: int) -> None:
        idx = batches[k % n_batches]
        train_step(model, strategy, optimizer, split.x[idx], [split.y[n][idx] for n in problem.task_names], autocast)

    for k in range(args.warmup):
        step(k)
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        start.record()
        for k in range(args.steps):
            step(k)
        end.record()
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return Measurement(
        step_ms=start.elapsed_time(end) / args.steps,
        peak_mib=torch.cuda.max_memory_allocated(device) / 2**20,
        syncs_per_step=syncs / args.steps,
        final_weights=strategy.weights().tolist(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--problem", default="gradnorm-toy")
    parser.add_argument("--tasks", type=int, default=10, help="gradnorm-toy only")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args()
    console = Console()
    if not torch.cuda.is_available():
        console.print("CUDA is not available on this machine: nothing to check (exit 0).")
        return

    results = {name: measure(name, args) for name in STRATEGIES}
    base = results["equal"].step_ms
    table = Table(
        "strategy",
        "step time (ms)",
        "relative to equal",
        "peak memory (MiB)",
        "host syncs / step",
        "weights finite",
        title=f"{torch.cuda.get_device_name()}: {args.problem}, batch {args.batch_size}, {args.steps} steps"
        + (", bf16" if args.bf16 else ""),
    )
    for name, m in results.items():
        finite = all(math.isfinite(w) for w in m.final_weights)
        table.add_row(
            name,
            f"{m.step_ms:.3f}",
            f"{m.step_ms / base:.3f}x",
            f"{m.peak_mib:.1f}",
            f"{m.syncs_per_step:.2f}",
            "yes" if finite else "NO",
        )
    console.print(table)


if __name__ == "__main__":
    main()
