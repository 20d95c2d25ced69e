"""A strategy's own per-task series travel from its ``report()`` to the trial endpoint with no code of their own:
a real study trial stores them per epoch and the API returns them by name."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from sqlalchemy import select
from torch import Tensor

import storage
from tests.api.helpers import BACKENDS, client_for, database, run_study
from tuner import weighting
from tuner.weighting import Equal

pytestmark = pytest.mark.slow


class CosineProbe(Equal):
    """Equal weighting that also reports a series no other code knows of (as a conflict measure would)."""

    name: ClassVar[str] = "cosine-probe"

    def report(self) -> dict[str, Tensor]:
        weights = self.weights()
        return super().report() | {"cosine": torch.linspace(-0.5, 0.5, self.n_tasks, device=weights.device)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_series_is_stored_per_epoch_and_served(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(weighting.STRATEGIES, CosineProbe.name, CosineProbe)
    with database(backend, tmp_path) as url:
        # Trial 0 is the baseline (equal weights); trial 1 runs the probe.
        name = run_study(url, name="probe", n_trials=2, epochs=2, space={"strategy": CosineProbe.name})
        with storage.session_scope(url) as session:
            job = storage.get_job(session, name)
            stored = session.execute(
                select(storage.EpochMetric.trial_number, storage.EpochMetric.epoch, storage.EpochMetric.task,
                       storage.EpochMetric.series).where(storage.EpochMetric.job_id == job.id)
                .order_by(storage.EpochMetric.trial_number, storage.EpochMetric.epoch, storage.EpochMetric.task)
            ).all()  # fmt: skip
        cosine = {"y1": -0.5, "y2": 0.5}
        assert [tuple(r) for r in stored] == [
            *((0, epoch, task, None) for epoch in (0, 1) for task in ("y1", "y2")),
            *((1, epoch, task, {"cosine": cosine[task]}) for epoch in (0, 1) for task in ("y1", "y2")),
        ]

        with client_for(url) as client:
            trial = client.get(f"/api/studies/{name}/trials/1").json()
            baseline = client.get(f"/api/studies/{name}/trials/0").json()
    assert trial["config"]["strategy"] == CosineProbe.name
    assert [e["epoch"] for e in trial["epochs"]] == [0, 1]
    for epoch in trial["epochs"]:
        for task, curve in epoch["tasks"].items():
            assert curve["series"] == {"cosine": pytest.approx(cosine[task])}
            assert curve["weight"] == pytest.approx(1.0)
            assert curve["sigma"] is None and curve["grad_norm"] is None
    assert {task: t["series"] for task, t in trial["tasks"].items()} == {
        task: {"cosine": pytest.approx(value)} for task, value in cosine.items()
    }
    assert all(curve["series"] == {} for e in baseline["epochs"] for curve in e["tasks"].values())
