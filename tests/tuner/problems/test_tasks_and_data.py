"""Tasks (loss and metric presets, masks, custom callables, torchmetrics objects) and data (tensors or loaders)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
import torch
import torchmetrics
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from tuner.config import Chain, TrainConfig
from tuner.problems import Dataset, Defaults, Masked, Metric, Problem, ProblemError, SharedBottom, Split, Task, mlp
from tuner.train import evaluate, train


def _eval(task: Task, pred: torch.Tensor, target: Any, batch: int = 2048) -> tuple[float, float]:
    class Identity(nn.Module):
        def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
            return {task.name: inputs}

    split = [(pred[i : i + batch], {task.name: _rows(target, i, batch)}) for i in range(0, len(pred), batch)]
    losses, metrics = evaluate(Identity(), [task], split, torch.device("cpu"))
    return float(losses[0]), float(metrics[0])


def _rows(target: Any, start: int, n: int) -> Any:
    if isinstance(target, Masked):
        return Masked(target.value[start : start + n], target.mask[start : start + n])
    return target[start : start + n]


def test_presets_and_their_default_metrics_and_directions() -> None:
    expected = {
        "regression": ("rmse", "minimize"),
        "l1": ("mae", "minimize"),
        "classification": ("accuracy", "maximize"),
        "binary": ("auc", "maximize"),
        "multilabel": ("f1", "maximize"),
    }
    for loss, (metric, direction) in expected.items():
        task = Task("t", loss, out_dim=3 if loss in ("classification", "multilabel") else 1)
        assert (task.kind, task.metric_name, task.direction) == (loss, metric, direction)


def test_auc_is_computed_over_the_whole_split_not_averaged_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(400, generator=g) < 0.3).float()
    logits = target * 0.8 + torch.randn(400, generator=g)
    expected = roc_auc_score(target.numpy(), logits.numpy())
    _, whole = _eval(Task("click", "binary"), logits[:, None], target[:, None], batch=400)
    _, batched = _eval(Task("click", "binary"), logits[:, None], target[:, None], batch=37)
    assert whole == pytest.approx(expected, abs=1e-6)
    assert batched == pytest.approx(expected, abs=1e-6)


def test_binary_metrics_read_logits_as_probabilities_even_inside_zero_one() -> None:
    # Logits all in [0, 1]: torchmetrics would take them as probabilities; the preset applies the sigmoid itself.
    logits = torch.tensor([0.1, 0.2, 0.9, 0.3])[:, None]
    target = torch.tensor([0.0, 0.0, 1.0, 1.0])[:, None]
    _, accuracy = _eval(Task("b", "binary", metric="accuracy"), logits, target)
    assert accuracy == pytest.approx(0.5)  # sigmoid(x) > 0.5 for every x > 0: all predicted positive
    _, balanced = _eval(Task("b", "binary", metric="balanced_accuracy"), logits, target)
    assert balanced == pytest.approx(0.5)


def test_per_pixel_classification_and_miou() -> None:
    target = torch.tensor([[[0, 1], [1, 2]]])  # 1 x 2 x 2 pixels, 3 classes
    logits = F.one_hot(torch.tensor([[[0, 1], [2, 2]]]), 3).permute(0, 3, 1, 2).float() * 5
    task = Task("seg", "classification", out_dim=3, metric="miou")
    loss, miou = _eval(task, logits, target)
    # IoU per class: 0 -> 1, 1 -> 1/2, 2 -> 1/2.
    assert miou == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert loss == pytest.approx(float(F.cross_entropy(logits, target)))


def test_regression_metrics_in_the_users_units() -> None:
    pred, target = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])
    assert _eval(Task("r", "regression", metric_scale=2.0), pred, target)[1] == pytest.approx(2.0 * 5.0**0.5)
    assert _eval(Task("r", "regression", metric="mse", metric_scale=2.0), pred, target)[1] == pytest.approx(20.0)
    assert _eval(Task("r", "l1"), pred, target)[1] == pytest.approx(2.0)


def test_a_masked_target_counts_only_its_defined_rows() -> None:
    pred = torch.tensor([[1.0], [2.0], [100.0], [4.0]])
    value = torch.tensor([[0.0], [0.0], [0.0], [0.0]])
    mask = torch.tensor([True, True, False, True])
    task = Task("dwell", "regression", metric="mse")
    assert float(task.compute_loss(pred, Masked(value, mask))) == pytest.approx((1 + 4 + 16) / 3)
    loss, metric = _eval(task, pred, Masked(value, mask), batch=2)
    assert loss == pytest.approx((1 + 4 + 16) / 3) and metric == pytest.approx((1 + 4 + 16) / 3)
    none = Masked(value, torch.zeros(4, dtype=torch.bool))
    assert float(task.compute_loss(pred, none)) == 0.0


def test_custom_losses_with_and_without_the_mask() -> None:
    pred, value = torch.tensor([[1.0], [5.0]]), torch.tensor([[0.0], [0.0]])
    mask = torch.tensor([True, False])
    seen: list[int] = []

    def two(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(len(p))
        return (p - y).abs().mean()

    def three(p: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return ((p - y).abs()[:, 0] * m).sum()

    assert float(Task("t", two, metric="mae").compute_loss(pred, Masked(value, mask))) == 1.0
    assert seen == [1]  # a two-argument loss sees the defined rows only
    assert float(Task("t", three, metric="mae").compute_loss(pred, Masked(value, mask))) == 1.0
    with pytest.raises(ProblemError, match="task 't': a task with a custom loss needs a metric"):
        Task("t", two)


def test_torchmetrics_objects_bring_their_direction_or_take_one() -> None:
    task = Task("t", "regression", metric=torchmetrics.MeanAbsoluteError())
    assert task.direction == "minimize"
    flipped = Task("t", "binary", metric=torchmetrics.classification.BinaryAUROC(), direction="minimize")
    assert flipped.direction == "minimize"
    custom = Task("t", "regression", metric=Metric("accuracy", "minimize", torchmetrics.MeanSquaredError))
    assert (custom.metric_name, custom.direction) == ("accuracy", "minimize")  # nothing guesses from a name

    class NoDirection(torchmetrics.MeanSquaredError):
        higher_is_better = None

    with pytest.raises(ProblemError, match="does not declare higher_is_better: pass direction="):
        Task("t", "regression", metric=NoDirection())


def test_bad_tasks_are_refused_with_their_name() -> None:
    with pytest.raises(ProblemError, match="task 'x': unknown loss 'hinge'"):
        Task("x", "hinge")
    with pytest.raises(ProblemError, match="task 'x': metric 'accuracy' does not suit a regression task"):
        Task("x", "regression", metric="accuracy")
    with pytest.raises(ProblemError, match="task 'x': unknown metric 'r2'"):
        Task("x", "regression", metric="r2")


class _Stream(IterableDataset):  # type: ignore[type-arg]
    """Samples made on the fly; counts how many it produced."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.produced = n, seed, 0

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.n):
            self.produced += 1
            ids = torch.randint(0, 10, (1,), generator=g)
            dense = torch.randn(3, generator=g)
            yield {"ids": ids, "dense": dense}, {"y": dense.sum(0, keepdim=True) + ids.float(), "c": ids % 2}


def _collate(samples: list[Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    inputs = {k: torch.stack([s[0][k] for s in samples]) for k in samples[0][0]}
    return inputs, {k: torch.stack([s[1][k] for s in samples]) for k in samples[0][1]}


class _Net(nn.Module):
    def __init__(self, tasks: list[Task], chain: Chain | None) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.inner = SharedBottom(tasks, mlp(7, 16, 1), 16, chain)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        return self.inner(torch.cat([self.embed(inputs["ids"][:, 0]), inputs["dense"]], dim=1))


class StreamedProblem(Problem):
    """int64 ids and float features in a dict, streamed by a DataLoader with a custom collate."""

    name: ClassVar[str] = "streamed"

    @property
    def tasks(self) -> list[Task]:
        return [Task("y", "regression"), Task("c", "binary", metric="balanced_accuracy")]

    def load(self) -> Dataset:
        self.train_data = _Stream(96, 0)
        return Dataset(
            train=DataLoader(self.train_data, batch_size=32, collate_fn=_collate),
            val=DataLoader(_Stream(40, 1), batch_size=16, collate_fn=_collate),
            test=DataLoader(_Stream(40, 2), batch_size=16, collate_fn=_collate),
        )

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return _Net(self.tasks, chain)

    def parameter_groups(self, model: nn.Module) -> Any:
        from tuner.problems import ParameterGroups

        assert isinstance(model, _Net)
        shared = [*model.embed.parameters(), *model.inner.shared.parameters()]
        return ParameterGroups(shared, {t: list(model.inner.heads[t].parameters()) for t in ("y", "c")})

    def last_shared_layer(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, _Net)
        return model.inner.shared[0]

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, epochs=2)


@pytest.mark.parametrize("strategy", ["equal", "uncertainty", "gradnorm"])
def test_a_streamed_loader_trains_without_being_materialised(strategy: str) -> None:
    problem = StreamedProblem.create()
    result = train(problem, TrainConfig(strategy=strategy, schedule="cosine", warmup=0.2), device="cpu")
    assert problem.train_data.produced == 2 * 96  # each epoch streams the training samples once
    assert len(result.history) == 2
    assert result.test is not None and set(result.test) == {"y", "c"}
    assert 0.0 <= result.final.tasks["c"].metric <= 1.0


def test_a_model_that_returns_no_mapping_or_misses_a_task_is_named() -> None:
    class Partial(StreamedProblem):
        def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
            net = _Net(self.tasks, chain)
            forward = net.forward
            net.forward = lambda inputs: {"y": forward(inputs)["y"]}  # type: ignore[method-assign]
            return net

    with pytest.raises(ProblemError, match="no prediction for task 'c'; it has \\['y'\\]"):
        train(Partial.create(), TrainConfig(epochs=1), device="cpu")


def test_in_memory_inputs_may_be_any_structure_of_tensors() -> None:
    split = Split({"ids": torch.arange(5), "x": (torch.ones(5, 2), torch.zeros(5))}, {"t": torch.arange(5.0)})
    inputs, targets = split.take(torch.tensor([4, 1]))
    assert torch.equal(inputs["ids"], torch.tensor([4, 1])) and inputs["x"][0].shape == (2, 2)
    assert isinstance(inputs["x"], tuple) and torch.equal(targets["t"], torch.tensor([4.0, 1.0]))
    assert len(split) == 5
