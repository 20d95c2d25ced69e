"""Fixtures for the training core's tests: one thread, and a tiny problem mixing regression and classification."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from tuner.problems import Dataset, Defaults, Problem, Split, Task, Trunk, mlp_trunk


class TinyMixed(Problem):
    """Three tasks on 6 features: two regressions and a 3-class classification, learnable in a few epochs."""

    name: ClassVar[str] = "tiny-mixed"

    @property
    def tasks(self) -> list[Task]:
        return [Task("a", "regression"), Task("b", "regression"), Task("c", "classification", out_dim=3)]

    def load(self) -> Dataset:
        g = torch.Generator().manual_seed(self.options.seed)
        x = torch.randn(240, 6, generator=g)
        ys = {
            "a": x[:, :2].sum(dim=1, keepdim=True),
            "b": 3.0 * (x[:, 2:3] - x[:, 3:4]),
            "c": torch.bucketize(x[:, 4].contiguous(), torch.tensor([-0.5, 0.5])),
        }
        return Dataset(
            train=Split(x[:160], {k: v[:160] for k, v in ys.items()}),
            val=Split(x[160:], {k: v[160:] for k, v in ys.items()}),
        )

    def build_trunk(self, hidden: int, depth: int) -> Trunk:
        return mlp_trunk(6, hidden, depth)

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, lr_weighting=1e-2, batch_size=32, epochs=3, hidden=16, depth=2)


@pytest.fixture
def tiny() -> Problem:
    return TinyMixed.create()
