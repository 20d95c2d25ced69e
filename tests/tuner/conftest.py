"""Fixtures for the training core's tests: one thread, and a tiny problem mixing regression and classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from tuner.config import Chain
from tuner.problems import Dataset, Defaults, Knob, Problem, SharedBottom, Split, Task, mlp


class TinyMixed(Problem):
    """Three tasks on 6 features: two regressions and a 3-class classification, learnable in a few epochs."""

    name: ClassVar[str] = "tiny-mixed"
    model_knobs: ClassVar[Mapping[str, Knob]] = {"hidden": Knob(16), "depth": Knob(2)}

    @property
    def tasks(self) -> list[Task]:
        return [Task("a", "regression"), Task("b", "regression"), Task("c", "classification", out_dim=3)]

    @property
    def chains(self) -> tuple[tuple[str, str], ...]:
        return (("c", "a"),)

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

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return SharedBottom(self.tasks, mlp(6, knobs["hidden"], knobs["depth"]), knobs["hidden"], chain)

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, lr_weighting=1e-2, batch_size=32, epochs=3)


@pytest.fixture
def tiny() -> Problem:
    return TinyMixed.create()
