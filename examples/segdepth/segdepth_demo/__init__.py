"""An image mtl-tune plugin: a conv encoder shared by a segmentation decoder (mIoU) and a depth decoder (L1).

Scenes are drawn on the fly: a rectangle and a disc on a noisy floor, each shape at its own depth. The splits are
``DataLoader``s over an ``IterableDataset``: training streams them batch by batch and never holds a split in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tuner.config import Chain
from tuner.problems import Dataset, Defaults, Knob, Problem, ProblemOptions, Task

CLASSES = 3  # floor, rectangle, disc
Sample = tuple[Tensor, Tensor, Tensor]


class SegDepthOptions(ProblemOptions):
    size: int = Field(16, ge=8, le=128, multiple_of=2, description="image side in pixels (even: the encoder halves it)")
    n_train: int = Field(512, ge=1)
    n_val: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)


class Scenes(IterableDataset[Sample]):
    """``n`` scenes, scene ``i`` drawn from its own seed: every pass (and any worker split) yields the same ones.

    ``produced`` counts the scenes drawn in this process: each pass draws its scenes as they are consumed.
    """

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.n, self.size, self.seed = n, size, seed
        self.produced = 0

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in range(first, self.n, step):
            self.produced += 1
            yield scene(self.size, torch.Generator().manual_seed(self.seed * 1_000_003 + i))


def scene(size: int, g: torch.Generator) -> Sample:
    """An RGB image, its per-pixel class and its per-pixel depth (the floor recedes towards the top)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    depth = 2.0 - yy.float() / size
    seg = torch.zeros(size, size, dtype=torch.long)
    image = 0.2 * torch.randn(3, size, size, generator=g)
    image[2] += depth / 2
    for cls in (1, 2):  # the disc is drawn last: it may hide part of the rectangle
        cy, cx = torch.randint(2, size - 2, (2,), generator=g).tolist()
        r = int(torch.randint(2, max(3, size // 4), (1,), generator=g))
        if cls == 1:
            mask = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r // 2 + 1)
        else:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        d = 0.3 + 0.7 * float(torch.rand(1, generator=g))
        seg[mask], depth[mask] = cls, d
        image[cls - 1][mask] += 1.5 - d  # nearer is brighter, in the shape's own colour channel
    return image, seg, depth[None]


def collate(samples: list[Sample]) -> tuple[Tensor, dict[str, Tensor]]:
    """A batch as mtl-tune reads it: ``(inputs, {task name: target})``."""
    images, segs, depths = (torch.stack(column) for column in zip(*samples, strict=True))
    return images, {"seg": segs, "depth": depths}


def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class SegDepthNet(nn.Module):
    """``shared``: the encoder (to half resolution); ``heads``: one upsampling decoder per task."""

    def __init__(self, width: int) -> None:
        super().__init__()
        # The encoder ends in a Conv2d: GradNorm balances the tasks' gradients on that layer's weights.
        self.shared = nn.Sequential(
            conv(3, width), nn.ReLU(), conv(width, width, stride=2), nn.ReLU(), conv(width, width)
        )
        self.heads = nn.ModuleDict({"seg": self.decoder(width, CLASSES), "depth": self.decoder(width, 1)})

    @staticmethod
    def decoder(width: int, out: int) -> nn.Sequential:
        return nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(width, width, 2, stride=2), nn.ReLU(), conv(width, out))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.shared(images)
        return {task: head(features) for task, head in self.heads.items()}


class SegDepthDemo(Problem):
    """Per-pixel class and depth of synthetic scenes, streamed from a ``DataLoader``."""

    name: ClassVar[str] = "segdepth-demo"
    description: ClassVar[str] = "segmentation (mIoU) and depth (L1) of streamed synthetic scenes, shared conv encoder"
    Options = SegDepthOptions
    model_knobs: ClassVar[Mapping[str, Knob]] = {
        "width": Knob(16, choices=(8, 16, 32), help="channels of the encoder and the decoders"),
    }

    @property
    def tasks(self) -> list[Task]:
        return [
            Task("seg", "classification", out_dim=CLASSES, metric="miou"),
            Task("depth", "l1", metric="mae"),
        ]

    def load(self) -> Dataset:
        assert isinstance(self.options, SegDepthOptions)
        o = self.options
        # The train split is the loader itself: each epoch streams its scenes again, batch by batch.
        train = DataLoader(Scenes(o.n_train, o.size, 2 * o.seed), batch_size=o.batch_size, collate_fn=collate)
        val = DataLoader(Scenes(o.n_val, o.size, 2 * o.seed + 1), batch_size=o.batch_size, collate_fn=collate)
        return Dataset(train=train, val=val)

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return SegDepthNet(knobs["width"])

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, epochs=8)
