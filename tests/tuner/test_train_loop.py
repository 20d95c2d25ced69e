"""The training loop: configuration defaults, per-epoch reports, reproducibility and divergence."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tuner.config import ConfigError, TrainConfig
from tuner.device import resolve_device
from tuner.problems import Problem, ProblemError, create_problem
from tuner.train import EpochReport, NonFiniteLossError, resolve_config, train


def test_none_means_the_problem_default(tiny: Problem) -> None:
    resolved = resolve_config(tiny, TrainConfig(lr_heads=0.5))
    d = tiny.defaults
    assert (resolved.lr_shared, resolved.lr_heads, resolved.lr_weighting) == (d.lr_shared, 0.5, d.lr_weighting)
    assert (resolved.batch_size, resolved.epochs, resolved.model) == (32, 3, {"hidden": 16, "depth": 2})


def test_earlier_configurations_still_read() -> None:
    old = TrainConfig.model_validate({"hidden": 8, "depth": 3, "bf16": True})
    assert (old.model, old.precision) == ({"hidden": 8, "depth": 3}, "bf16")


def test_unknown_model_knobs_are_refused_with_their_name(tiny: Problem) -> None:
    with pytest.raises(ProblemError, match=r"model\.width: unknown model knob of problem 'tiny-mixed'; knobs: hidden"):
        resolve_config(tiny, TrainConfig(model={"width": 3}))


@pytest.mark.parametrize("field", ["lr_head", "weights"])
def test_unknown_task_names_are_refused_with_the_field(tiny: Problem, field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}: unknown task 'zz'"):
        resolve_config(tiny, TrainConfig.model_validate({field: {"zz": 1.0}}))


def test_the_callback_sees_every_epoch_with_every_task(tiny: Problem) -> None:
    reports: list[EpochReport] = []
    result = train(tiny, TrainConfig(strategy="uncertainty", epochs=3), device="cpu", on_epoch_end=reports.append)
    assert [r.epoch for r in reports] == [0, 1, 2]
    assert reports == result.history
    for report in reports:
        assert set(report.tasks) == {"a", "b", "c"}
        assert all(t.sigma is not None and t.sigma > 0 for t in report.tasks.values())
        normalised = [t.val_loss / result.reference[n] for n, t in report.tasks.items()]
        assert report.objective == pytest.approx(sum(normalised) / 3)
    assert 0 <= result.final.tasks["c"].metric <= 1  # accuracy
    assert result.final.tasks["c"].metric > 1 / 3  # above chance after three epochs
    assert result.final.tasks["a"].train_loss < reports[0].tasks["a"].train_loss


def test_a_raising_callback_stops_training(tiny: Problem) -> None:
    class Stop(Exception):
        pass

    epochs: list[int] = []

    def stop_after_two(report: EpochReport) -> None:
        epochs.append(report.epoch)
        if report.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(tiny, TrainConfig(epochs=5), device="cpu", on_epoch_end=stop_after_two)
    assert epochs == [0, 1]


def test_same_seed_same_result_on_cpu(tiny: Problem) -> None:
    config = TrainConfig(strategy="gradnorm", epochs=2, seed=3)
    first, second = train(tiny, config, device="cpu"), train(tiny, config, device="cpu")
    assert first.objective == second.objective
    assert first.final.tasks == second.final.tasks
    assert train(tiny, config.model_copy(update={"seed": 4}), device="cpu").objective != first.objective


def test_a_diverging_configuration_raises_non_finite_loss(tiny: Problem) -> None:
    with pytest.raises(NonFiniteLossError) as info:
        train(tiny, TrainConfig(optimizer="sgd", lr_shared=1e8, lr_heads=1e8, epochs=3), device="cpu")
    assert info.value.epoch == 0
    assert info.value.task in {"a", "b", "c"}
    assert "non-finite" in str(info.value)


def test_to_json_is_plain_json(tiny: Problem) -> None:
    result = train(tiny, TrainConfig(strategy="uncertainty-positive", epochs=1), device="cpu")
    out = json.loads(json.dumps(result.to_json()))
    assert set(out) == {"problem", "config", "tasks", "loss_weights", "objective", "sigma", "series"}
    assert out["problem"] == "tiny-mixed"
    assert set(out["tasks"]["a"]) == {"val_loss", "metric"}
    assert out["config"]["epochs"] == 1 and out["config"]["lr_shared"] == tiny.defaults.lr_shared
    assert math.isclose(out["objective"], result.objective)
    assert "sigma" not in train(tiny, TrainConfig(epochs=1), device="cpu").to_json()


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("no-such-device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device(None).type in {"cpu", "mps"}


def test_the_test_split_is_read_only_when_asked() -> None:
    toy = create_problem("uncertainty-toy", {"n_train": 200, "n_val": 100, "n_test": 50})
    config = TrainConfig(strategy="equal", epochs=1, seed=0)
    judged = train(toy, config, device="cpu")
    searched = train(toy, config, device="cpu", evaluate_test=False)  # what a study's trials do
    assert judged.test is not None and set(judged.test) == set(toy.task_names)
    assert searched.test is None
    assert searched.objective == judged.objective  # reading the test split changes nothing else
