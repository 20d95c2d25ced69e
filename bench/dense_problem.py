"""A dense-prediction problem for the benchmarks: per-pixel segmentation and per-pixel depth from one conv encoder.

The encoder ends in a ``Conv2d`` (its output is a B x C x H x W feature map) and each task has its own conv decoder,
so GradNorm takes its general path: the last shared layer is not an ``nn.Linear``. Scenes are synthetic: a
rectangle and a disc on a floor that recedes towards the top, each shape at its own depth, drawn from the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from tuner.config import Chain
from tuner.problems import Dataset, Defaults, Knob, Problem, ProblemOptions, Split, Task

CLASSES = 3  # floor, rectangle, disc


class DenseOptions(ProblemOptions):
    size: int = Field(32, ge=8, le=256, description="image side in pixels")
    n_train: int = Field(512, ge=1)
    n_val: int = Field(128, ge=1)


def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class DenseNet(nn.Module):
    """``shared``: the encoder, to half resolution; ``heads``: one upsampling decoder per task."""

    def __init__(self, width: int) -> None:
        super().__init__()
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


class DenseScenes(Problem):
    """Per-pixel class (mIoU) and depth (L1) of synthetic scenes, held in memory."""

    name: ClassVar[str] = "dense-scenes"
    description: ClassVar[str] = "segmentation and depth of synthetic scenes from a shared conv encoder"
    Options = DenseOptions
    model_knobs: ClassVar[Mapping[str, Knob]] = {"width": Knob(16, help="channels of the encoder and decoders")}

    @property
    def tasks(self) -> list[Task]:
        return [Task("seg", "classification", out_dim=CLASSES, metric="miou"), Task("depth", "l1", metric="mae")]

    def load(self) -> Dataset:
        assert isinstance(self.options, DenseOptions)
        o = self.options
        g = torch.Generator().manual_seed(o.seed)
        return Dataset(train=scenes(o.n_train, o.size, g), val=scenes(o.n_val, o.size, g))

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return DenseNet(knobs["width"])

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, batch_size=32, epochs=8)


def scenes(n: int, size: int, g: torch.Generator) -> Split:
    """``n`` RGB images with their per-pixel class (B x H x W) and depth (B x 1 x H x W)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    depth = (2.0 - yy / size).expand(n, size, size).clone()
    seg = torch.zeros(n, size, size, dtype=torch.long)
    image = 0.2 * torch.randn(n, 3, size, size, generator=g)
    centre = torch.randint(2, size - 2, (2, n, 2, 1, 1), generator=g)
    radius = torch.randint(2, max(3, size // 4), (2, n, 1, 1), generator=g)
    shape_depth = 0.3 + 0.7 * torch.rand(2, n, 1, 1, generator=g)
    dy, dx = yy - centre[:, :, 0], xx - centre[:, :, 1]
    masks = (
        (dy[0].abs() <= radius[0]) & (dx[0].abs() <= radius[0] // 2 + 1),  # the rectangle
        dy[1] ** 2 + dx[1] ** 2 <= radius[1] ** 2,  # the disc, drawn last: it may hide part of the rectangle
    )
    for cls, mask in enumerate(masks, start=1):
        seg[mask] = cls
        depth = torch.where(mask, shape_depth[cls - 1], depth)
        image[:, cls - 1] += mask * (1.5 - shape_depth[cls - 1])  # nearer is brighter, in the shape's own channel
    image[:, 2] += depth / 2
    return Split(image, {"seg": seg, "depth": depth[:, None]})
