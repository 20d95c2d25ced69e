"""A MultiMNIST-style problem built offline from scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from tuner.config import Chain
from tuner.problems._base import SAMPLES, Defaults, Knob, Problem, ProblemOptions, samples_help
from tuner.problems._data import Dataset, Split
from tuner.problems._sharing import SharedBottom
from tuner.problems._task import Task

CANVAS = 12
OFFSET = 4  # the right digit starts 4 pixels right and 4 down of the left one, so they overlap

_N_TRAIN = samples_help("training")
_N_VAL = samples_help("validation")
_N_TEST = samples_help("test")


class MultiDigitsOptions(ProblemOptions):
    n_train: int = Field(3000, ge=10, json_schema_extra=SAMPLES, description=_N_TRAIN)
    n_val: int = Field(600, ge=10, json_schema_extra=SAMPLES, description=_N_VAL)
    n_test: int = Field(1000, ge=10, json_schema_extra=SAMPLES, description=_N_TEST)


class MultiDigits(Problem):
    """Two overlaid digits on a 12x12 canvas. Tasks: the left digit, the right digit (10 classes each) and the sum
    of both (regression), so classification and regression share one small CNN trunk.

    Training images are drawn from one half of the digit set; validation and test images from the other half.
    """

    name: ClassVar[str] = "multi-digits"
    description: ClassVar[str] = "MultiMNIST-style overlaid 8x8 digits: left, right (classes) and their sum"
    Options = MultiDigitsOptions
    model_knobs: ClassVar[Mapping[str, Knob]] = {
        "hidden": Knob(64, help="width of the shared representation", limit="width"),
        # Each block doubles the channels (16 * 2**i): past 6 blocks a 12x12 canvas is one pixel and the last
        # convolution alone holds over 10M weights.
        "depth": Knob(2, help="number of conv blocks", limit="depth", maximum=6),
    }

    @property
    def tasks(self) -> list[Task]:
        return [
            Task("left", "classification", out_dim=10),
            Task("right", "classification", out_dim=10),
            Task("sum", "regression", metric_scale=_SUM_STD),
        ]

    def load(self) -> Dataset:
        assert isinstance(self.options, MultiDigitsOptions)
        from sklearn.datasets import load_digits  # imported here: sklearn adds ~2 s to every CLI start

        digits = load_digits()
        images = digits.images.astype(np.float32) / 16.0
        labels = digits.target.astype(np.int64)
        rng = np.random.default_rng(self.options.seed)
        order = rng.permutation(len(labels))
        half = len(order) // 2
        train = _compose(images, labels, order[:half], self.options.n_train, rng)
        val = _compose(images, labels, order[half:], self.options.n_val, rng)
        test_rng = np.random.default_rng([self.options.seed, 1])
        test = _compose(images, labels, order[half:], self.options.n_test, test_rng)
        return Dataset(train=train, val=val, test=test)

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        hidden, depth = knobs["hidden"], knobs["depth"]
        channels = [1] + [16 * 2**i for i in range(max(depth, 1))]
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        side = CANVAS
        for _ in channels[1:]:
            side = (side + 1) // 2
        shared = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * side * side, hidden), nn.ReLU())
        return SharedBottom(self.tasks, shared, hidden, chain)

    @property
    def defaults(self) -> Defaults:
        return Defaults(
            lr_shared=2e-3,
            lr_heads=2e-3,
            lr_weighting=1e-2,
            batch_size=128,
            epochs=10,
            chain=("left", "sum"),
        )


# The sum of two uniform digits has mean 9 and std sqrt(2 * 8.25); the target is standardised with these.
_SUM_MEAN = 9.0
_SUM_STD = float(np.sqrt(2 * 8.25))


def _compose(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> Split:
    left = rng.choice(pool, size=n)
    right = rng.choice(pool, size=n)
    canvas = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32)
    canvas[:, 0, :8, :8] = images[left]
    canvas[:, 0, OFFSET : OFFSET + 8, OFFSET : OFFSET + 8] = np.maximum(
        canvas[:, 0, OFFSET : OFFSET + 8, OFFSET : OFFSET + 8], images[right]
    )
    total = (labels[left] + labels[right]).astype(np.float32)
    return Split(
        torch.from_numpy(canvas),
        {
            "left": torch.from_numpy(labels[left]),
            "right": torch.from_numpy(labels[right]),
            "sum": torch.from_numpy((total[:, None] - _SUM_MEAN) / _SUM_STD),
        },
    )
