"""A ``DataLoader``-fed training epoch through mtl-tune against a plain hand-written PyTorch loop.

Same model (a small conv encoder with a per-pixel segmentation decoder and a per-pixel regression decoder), same
loader (map-style dataset, batch 32, shuffled, a custom collate), same optimizer, one thread. mtl-tune's epoch is
``tuner.train.train_step`` over ``tuner.problems.iterate`` (with equal weighting); the plain loop is what a user
writes by hand: forward, the sum of the two losses, backward, step. Rounds alternate between the two, in a
rotating order; the ratio is the median over rounds. Time is the thread's CPU time (the loader has no worker
processes, so every step runs on this thread), so other processes on a shared machine do not count; ``--clock
wall`` measures wall-clock time. Prints a table; asserts nothing.

    .venv/bin/python bench/loader_epoch.py [--rounds 7] [--clock cpu|wall] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from tuner.config import Chain, TrainConfig
from tuner.problems import Dataset as Splits
from tuner.problems import Problem, Task, iterate
from tuner.train import build, resolve_config, train_step

SIDE, CLASSES, N = 16, 3, 512
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}


class Shapes(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 1, SIDE, SIDE, generator=g)
        self.seg = torch.randint(0, CLASSES, (n, SIDE, SIDE), generator=g)
        self.depth = torch.rand(n, 1, SIDE, SIDE, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.images[i], {"seg": self.seg[i], "depth": self.depth[i]}


def collate(samples: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[Any, dict[str, torch.Tensor]]:
    images = torch.stack([s[0] for s in samples])
    return images, {k: torch.stack([s[1][k] for s in samples]) for k in ("seg", "depth")}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1))
        self.heads = nn.ModuleDict(
            {
                "seg": nn.Sequential(nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, CLASSES, 1)),
                "depth": nn.Sequential(nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1)),
            }
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.shared(images)
        return {name: head(z) for name, head in self.heads.items()}


def loader() -> DataLoader[Any]:
    return DataLoader(Shapes(N), batch_size=32, shuffle=True, collate_fn=collate)


class Segdepth(Problem):
    name: ClassVar[str] = "bench-segdepth"

    @property
    def tasks(self) -> list[Task]:
        return [Task("seg", "classification", out_dim=CLASSES, metric="miou"), Task("depth", "l1")]

    def load(self) -> Splits:
        return Splits(train=loader(), val=loader())

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return Net()


def mtl_tune_epoch(clock: Callable[[], float]) -> Callable[[], float]:
    problem = Segdepth.create()
    run = build(problem, resolve_config(problem, TrainConfig(lr_shared=1e-3, lr_heads=1e-3)), torch.device("cpu"))
    data, cpu = loader(), torch.device("cpu")

    def epoch() -> float:
        start = clock()
        for inputs, targets in iterate(data, cpu, 32):
            train_step(run, inputs, targets)
        return clock() - start

    return epoch


def plain_epoch(clock: Callable[[], float]) -> Callable[[], float]:
    torch.manual_seed(0)
    model, data = Net(), loader()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> float:
        start = clock()
        for images, targets in data:
            out = model(images)
            loss = F.cross_entropy(out["seg"], targets["seg"]) + F.l1_loss(out["depth"], targets["depth"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return clock() - start

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = CLOCKS[args.clock]
    runners = {"mtl-tune": mtl_tune_epoch(clock), "plain loop": plain_epoch(clock)}
    for run in runners.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            times[name].append(runners[name]())
    ratios = [a / b for a, b in zip(times["mtl-tune"], times["plain loop"], strict=True)]
    rows = [
        (name, f"{statistics.median(ts) * 1e3:.1f}", f"{statistics.median(ratios):.3f}" if name == "mtl-tune" else "1")
        for name, ts in times.items()
    ]
    if args.markdown:
        print("| loop | epoch ms (median) | relative |\n|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    table = Table("loop", "epoch ms (median)", "relative", title=f"{N} samples, batch 32, {args.rounds} rounds")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
