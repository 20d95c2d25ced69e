"""GPU check: every loss-weighting strategy trains on CUDA in fp32, bf16 and fp16; step time, peak memory, host syncs.

Problems: ``gradnorm-toy --tasks 10`` (batch 100; its last shared layer is an ``nn.Linear``) and ``dense-scenes``
(``bench/dense_problem.py``: per-pixel segmentation and depth with conv decoders, batch 32; its last shared layer is
a ``Conv2d``). For every problem, precision (the configuration's ``precision``: fp16 runs with a gradient scaler)
and strategy, a warm-up and then ``--steps`` training steps run through ``tuner.train.train_step``, the loop's own
step, with the optimizer torch's fused kernels provide on CUDA (the ``fused`` column). Step time comes from CUDA
events, peak memory from ``torch.cuda.max_memory_allocated``, host synchronisations are counted with
``torch.cuda.set_sync_debug_mode("warn")``. For GradNorm the table also gives the largest relative error of one
batch's per-task gradient norms against one autograd call per task, and whether they came from the heads' views
or from the batched call through the whole graph. Prints a table; asserts nothing.

Without CUDA it says so and exits 0; ``--device cpu`` runs the same code on the CPU for a few steps, in fp32 only
(mixed precision is CUDA's here), as a smoke test.

    .venv/bin/python bench/gpu_check.py [--steps 300] [--problems toy10,dense] [--precisions fp32,bf16,fp16]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from dense_problem import DenseScenes
from rich.console import Console
from rich.table import Table
from torch import Tensor

from tuner import gradients
from tuner.config import TrainConfig
from tuner.problems import Problem, Split, create_problem
from tuner.train import Run, build, resolve_config, train_step
from tuner.weighting import STRATEGIES

PROBLEMS: dict[str, Callable[[], Problem]] = {
    "toy10": lambda: create_problem("gradnorm-toy", {"tasks": 10}),
    "dense": lambda: DenseScenes.create({"n_train": 512, "n_val": 8}),
}


@dataclass
class Measurement:
    step_ms: float
    peak_mib: float | None
    syncs_per_step: float | None
    fused: bool
    weights_finite: bool


def _run(problem: Problem, strategy: str, precision: str, device: torch.device) -> tuple[Run, list[Any]]:
    config = resolve_config(problem, TrainConfig(strategy=strategy, precision=precision))
    split = problem.load().train
    assert isinstance(split, Split) and config.batch_size is not None
    split = split.to(device)
    size = config.batch_size
    batches = [split.take(slice(i, i + size)) for i in range(0, len(split) - size + 1, size)]
    return build(problem, config, device), batches


def measure(
    problem: Problem, strategy: str, precision: str, device: torch.device, args: argparse.Namespace
) -> Measurement:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    run, batches = _run(problem, strategy, precision, device)
    for k in range(args.warmup):
        train_step(run, *batches[k % len(batches)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        elapsed = _timed(lambda: [train_step(run, *batches[k % len(batches)]) for k in range(args.steps)], cuda)
    syncs = sum("synchroniz" in str(w.message) for w in caught) / args.steps if cuda else None
    return Measurement(
        step_ms=elapsed * 1e3 / args.steps,
        peak_mib=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        syncs_per_step=syncs,
        fused=bool(run.optimizer.defaults.get("fused")),
        weights_finite=all(math.isfinite(w) for w in run.strategy.weights().tolist()),
    )


def _timed(steps: Callable[[], Any], cuda: bool) -> float:
    """Seconds the steps took: CUDA events around them, with host syncs reported as warnings, or the host clock."""
    if not cuda:
        start = time.perf_counter()
        steps()
        return time.perf_counter() - start
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        begin.record()
        steps()
        end.record()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / 1e3


def gradnorm_error(problem: Problem, precision: str, device: torch.device) -> tuple[float, str]:
    """The largest relative error of one batch's G_i against one autograd call per task, and the path taken."""
    run, batches = _run(problem, "gradnorm", precision, device)
    tap = run.grad_norms
    assert tap is not None
    inputs, targets = batches[0]
    with run.autocast or nullcontext(), tap.recording():
        outputs = run.model(inputs)
    losses = torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in run.tasks])
    reference = torch.stack([_norm(torch.autograd.grad(loss, tap.params, retain_graph=True)) for loss in losses])
    loss = run.strategy.combine(losses)
    fallbacks: list[int] = []
    batched = gradients.task_grad_norms

    def counted(losses: Tensor, params: Sequence[Tensor]) -> Tensor:
        fallbacks.append(1)
        return batched(losses, params)

    gradients.task_grad_norms = counted
    try:
        norms = tap.backward(losses, run.scaler.scale(loss) if run.scaler is not None else loss).norms
    finally:
        gradients.task_grad_norms = batched
    error = float(((norms - reference).abs() / reference).max())
    return error, "batched" if fallbacks else "views"


def _norm(grads: tuple[Tensor, ...]) -> Tensor:
    return torch.cat([g.float().flatten() for g in grads]).norm()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated, of {', '.join(PROBLEMS)}")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (fp32 only)")
    args = parser.parse_args()
    console = Console()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        console.print("CUDA is not available on this machine: nothing to check (exit 0).")
        return
    precisions = args.precisions.split(",") if device.type == "cuda" else ["fp32"]
    for key in args.problems.split(","):
        problem = PROBLEMS[key]()
        for precision in precisions:
            console.print(_table(problem, precision, device, args))


def _table(problem: Problem, precision: str, device: torch.device, args: argparse.Namespace) -> Table:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = Table(
        "strategy",
        "step (ms)",
        "vs equal",
        "peak (MiB)",
        "host syncs / step",
        "fused",
        "weights finite",
        "G rel. error",
        "G from",
        title=f"{where}: {problem.name}, {precision}, {args.steps} steps",
    )
    results = {name: measure(problem, name, precision, device, args) for name in STRATEGIES}
    error, path = gradnorm_error(problem, precision, device)
    base = results["equal"].step_ms
    for name, m in results.items():
        table.add_row(
            name,
            f"{m.step_ms:.3f}",
            f"{m.step_ms / base:.2f}x",
            "-" if m.peak_mib is None else f"{m.peak_mib:.1f}",
            "-" if m.syncs_per_step is None else f"{m.syncs_per_step:.2f}",
            "yes" if m.fused else "no",
            "yes" if m.weights_finite else "NO",
            f"{error:.1e}" if name == "gradnorm" else "",
            path if name == "gradnorm" else "",
        )
    return table


if __name__ == "__main__":
    main()
