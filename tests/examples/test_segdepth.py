"""The image example: splits streamed from a DataLoader, per-pixel tasks, GradNorm on a conv layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from tuner.config import TrainConfig
from tuner.problems import Problem, available_problems
from tuner.train import train

pytestmark = pytest.mark.usefixtures("installed")
N_TRAIN, N_VAL, BATCH = 96, 32, 16


def segdepth() -> Problem:
    options = {"n_train": N_TRAIN, "n_val": N_VAL, "batch_size": BATCH}
    return available_problems()["segdepth-demo"].create(options)


def test_the_train_split_is_streamed_never_materialised() -> None:
    problem = segdepth()
    result = train(problem, TrainConfig(epochs=2, strategy="gradnorm"), device="cpu")
    data = problem.dataset()
    assert isinstance(data.train, DataLoader) and isinstance(data.train.dataset, IterableDataset)
    # Drawn once per epoch as the batches are consumed: a materialised split would be drawn once and replayed.
    assert data.train.dataset.produced == 2 * N_TRAIN
    # Validation: the untrained reference, then once after each epoch.
    assert data.val.dataset.produced == 3 * N_VAL
    assert [r.epoch for r in result.history] == [0, 1]
    assert 0.0 <= result.final.tasks["seg"].metric <= 1.0 and result.final.tasks["depth"].metric > 0.0


def test_batches_are_per_pixel_targets_by_task_name() -> None:
    problem = segdepth()
    images, targets = next(iter(problem.dataset().train))
    assert images.shape == (BATCH, 3, 16, 16)
    assert targets["seg"].shape == (BATCH, 16, 16) and targets["seg"].dtype == torch.long
    assert set(targets["seg"].unique().tolist()) <= {0, 1, 2}
    assert targets["depth"].shape == (BATCH, 1, 16, 16)
    model = problem.build_model(problem.knob_values({}), None)
    out = model(images)
    assert out["seg"].shape == (BATCH, 3, 16, 16) and out["depth"].shape == (BATCH, 1, 16, 16)
    # GradNorm's layer is the encoder's last convolution, whose output is a feature map.
    assert isinstance(problem.last_shared_layer(model), nn.Conv2d)


def test_every_pass_streams_the_same_scenes() -> None:
    loader = segdepth().dataset().val
    first, second = ([t["depth"] for _, t in loader] for _ in range(2))
    assert len(first) == N_VAL // BATCH
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
