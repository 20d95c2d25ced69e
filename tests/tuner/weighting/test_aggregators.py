"""Gradient aggregators (torchjd): every task's gradient on the shared parameters, the papers' properties, any model."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from tests.tuner.conftest import TinyMixed
from tests.tuner.weighting.host_reads import no_host_reads
from tests.tuner.weighting.test_gradnorm import DropoutTrunk, InplaceHeads, TinySegDepth, TokenTrunk, ZeroSource
from tuner import gradients
from tuner.config import Chain, ConfigError, TrainConfig
from tuner.gradients import TaskGradients
from tuner.problems import Problem, Task, create_problem, mlp
from tuner.train import Run, build, resolve_config, train, train_step
from tuner.weighting import STRATEGIES, build_strategy
from tuner.weighting._aggregators import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    DualProj,
    GradDrop,
    GradientAggregator,
    NashMTL,
    PCGrad,
    RandomGrad,
    UPGrad,
)

AGGREGATORS: list[type[GradientAggregator]] = [
    cls for cls in STRATEGIES.values() if issubclass(cls, GradientAggregator)
]
BY_NAME = {cls.name: cls for cls in AGGREGATORS}


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in AGGREGATORS:
        monkeypatch.setitem(STRATEGIES, cls.name, cls)


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", "regression") for i in range(n)]


def _aggregate(strategy: GradientAggregator, matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The strategy's weights, aggregate and cosines for a given Jacobian (one row per task)."""
    param = nn.Parameter(torch.zeros(matrix.shape[1], dtype=matrix.dtype))
    return strategy.aggregate(TaskGradients(matrix, [param]))


def _run(problem: Problem, config: TrainConfig) -> Run:
    return build(problem, resolve_config(problem, config), torch.device("cpu"))


def _losses(run: Run, problem: Problem, rows: slice = slice(0, 32)) -> Tensor:
    """The per-task losses of one recorded forward pass (the step's first half)."""
    assert run.jacobian is not None
    inputs, targets = problem.load().train.take(rows)  # type: ignore[union-attr]
    with run.jacobian.recording():
        outputs = run.model(inputs)
    return torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in run.tasks])


# --- every aggregator trains ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_aggregator_trains_tiny_mixed_end_to_end(tiny: Problem, name: str, registered: None) -> None:
    seen: list[int] = []
    result = train(
        tiny, TrainConfig(strategy=name, epochs=3), device="cpu", on_epoch_end=lambda r: seen.append(r.epoch)
    )
    assert seen == [0, 1, 2]
    assert result.objective < 1.0
    for task in result.final.tasks.values():
        assert math.isfinite(task.weight) and math.isfinite(task.train_loss) and math.isfinite(task.val_loss)
    assert result.model is not None


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_a_conv_model_of_a_user_s_own_trains(name: str, registered: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conv decoders on a B x C x H x W feature map, parameter groups of the user's own naming: the batched pass
    starts from the decoders' input, never from the losses."""
    outputs = _jac_outputs(monkeypatch)
    problem = TinySegDepth.create()
    result = train(problem, TrainConfig(strategy=name), device="cpu")
    assert len(result.history) == 2 and math.isfinite(result.objective)
    assert outputs and all(shapes == [(16, 6, 4, 4)] for shapes in outputs)


def _jac_outputs(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, ...]]]:
    """The shapes of what every batched Jacobian pass starts from."""
    calls: list[list[tuple[int, ...]]] = []
    original = gradients._batched

    def recorded(outputs: Sequence[Tensor], *args: Any, **kwargs: Any) -> tuple[Tensor | None, ...]:
        calls.append([tuple(t.shape) for t in outputs])
        return original(outputs, *args, **kwargs)

    monkeypatch.setattr(gradients, "_batched", recorded)
    return calls


# --- the Jacobian and the heads' gradients --------------------------------------------------------------------


class Readout(nn.Module):
    """Task ``b`` has no head: its prediction is one of the shared features itself."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = mlp(6, 16, 2)
        self.heads = nn.ModuleDict({"a": nn.Linear(16, 1), "c": nn.Linear(16, 3)})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        rep = self.shared(x)
        return {"a": self.heads["a"](rep), "b": rep[:, :1], "c": self.heads["c"](rep)}


class SharedReadout(TinyMixed):
    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return Readout()


JACOBIAN_CASES: dict[str, Callable[[], tuple[Problem, TrainConfig, bool]]] = {
    # problem, configuration, whether the batched pass starts from the heads' inputs (else from the losses)
    "mlp": lambda: (TinyMixed.create(), TrainConfig(), True),
    "detach": lambda: (TinyMixed.create(), TrainConfig(chain=Chain(source="c", target="a", mode="detach")), True),
    "through": lambda: (TinyMixed.create(), TrainConfig(chain=Chain(source="c", target="a", mode="through")), False),
    "dropout": lambda: (DropoutTrunk.create(), TrainConfig(), True),
    "tokens": lambda: (TokenTrunk.create(), TrainConfig(), True),
    "conv": lambda: (TinySegDepth.create(), TrainConfig(), True),
    "inplace": lambda: (InplaceHeads.create(), TrainConfig(), False),
    "readout": lambda: (SharedReadout.create(), TrainConfig(), False),
    "toy": lambda: (create_problem("gradnorm-toy", {"tasks": 4, "n_train": 32, "n_val": 10}), TrainConfig(), True),
}


@pytest.mark.parametrize("case", sorted(JACOBIAN_CASES))
def test_the_jacobian_holds_every_task_s_own_gradient_and_heads_get_the_plain_one(
    case: str, registered: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem, config, from_heads = JACOBIAN_CASES[case]()
    run = _run(problem, config.model_copy(update={"strategy": "upgrad"}))
    assert run.jacobian is not None
    run.model.train()
    losses = _losses(run, problem, slice(0, 16))
    shared, heads = run.jacobian.shared, run.jacobian.task_params
    expected = torch.stack(
        [torch.cat([g.flatten() for g in torch.autograd.grad(loss, shared, retain_graph=True)]) for loss in losses]
    )
    expected_heads = torch.autograd.grad(losses.sum(), heads, retain_graph=True, allow_unused=True)
    outputs = _jac_outputs(monkeypatch)
    grads = run.jacobian.backward(losses)
    torch.testing.assert_close(grads.matrix, expected, rtol=1e-5, atol=1e-7)
    for p, g in zip(heads, expected_heads, strict=True):
        if g is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)
    assert all(p.grad is None for p in shared)  # the strategy writes the shared gradient, not the Jacobian's pass
    assert len(outputs) == 1 and (outputs[0] != [(len(problem.tasks),)]) == from_heads, outputs


def test_heads_receive_exactly_their_own_task_s_gradient(tiny: Problem, registered: None) -> None:
    run = _run(tiny, TrainConfig(strategy="upgrad"))
    assert run.jacobian is not None
    losses = _losses(run, tiny)
    heads = run.model.heads
    assert isinstance(heads, nn.ModuleDict)
    own = {
        t.name: torch.autograd.grad(losses[i], list(heads[t.name].parameters()), retain_graph=True)
        for i, t in enumerate(tiny.tasks)
    }
    shared = [p for p in run.model.shared.parameters()]
    jacobian = [torch.autograd.grad(loss, shared, retain_graph=True) for loss in losses]
    run.optimizer.zero_grad(set_to_none=True)
    run.strategy.backward(losses, run.jacobian, None)
    for name, grads in own.items():
        for p, g in zip(heads[name].parameters(), grads, strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)
    # The shared parameters get UPGrad's aggregate of the tasks' gradients, not the sum's gradient.
    matrix = torch.stack([torch.cat([g.flatten() for g in per_task]) for per_task in jacobian])
    _, vector, _ = _aggregate(UPGrad(tiny.tasks), matrix)
    got = torch.cat([p.grad.flatten() for p in shared if p.grad is not None])
    torch.testing.assert_close(got, vector, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("mode", "reaches_source"), [("detach", False), ("through", True)])
def test_a_detached_chain_sends_the_source_head_nothing_from_the_target(
    mode: str, reaches_source: bool, registered: None
) -> None:
    """``c``'s own loss has zero gradient: whatever its head receives comes from ``a``, which reads it."""
    problem = ZeroSource.create()
    run = _run(problem, TrainConfig(strategy="upgrad", chain=Chain(source="c", target="a", mode=mode)))
    train_step(run, *problem.load().train.take(slice(0, 32)))  # type: ignore[union-attr]
    heads = run.model.heads
    assert isinstance(heads, nn.ModuleDict)
    source = [p.grad for p in heads["c"].parameters()]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in source) == reaches_source
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in heads["a"].parameters())


# --- the papers' properties -----------------------------------------------------------------------------------


def test_pcgrad_projects_a_conflicting_pair_onto_each_other_s_normal_plane() -> None:
    g1 = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    g2 = torch.tensor([-2.0, 1.0, 0.0], dtype=torch.float64)
    assert float(g1 @ g2) < 0
    weights, vector, _ = _aggregate(PCGrad(_tasks(2)), torch.stack([g1, g2]))
    w1, w2 = weights
    # Each projected gradient is its own plus a multiple of the other's: g1' = g1 + (w2 - 1) g2, and so on.
    p1, p2 = g1 + (w2 - 1) * g2, g2 + (w1 - 1) * g1
    torch.testing.assert_close(p1 + p2, vector)
    assert float(p1 @ g2) >= -1e-9 and float(p2 @ g1) >= -1e-9
    assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-9) and float(p2 @ g1) == pytest.approx(0.0, abs=1e-9)
    # Gradients that do not conflict are left as they are: the plain sum.
    weights, vector, _ = _aggregate(PCGrad(_tasks(2)), torch.stack([g1, g1 + g2 * 0.1]))
    torch.testing.assert_close(weights, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(vector, 2 * g1 + g2 * 0.1)


def _simplex(k: int, steps: int) -> Tensor:
    """Every point of the k-simplex grid with spacing 1 / steps."""
    points = [c for c in itertools.product(range(steps + 1), repeat=k - 1) if sum(c) <= steps]
    grid = torch.tensor(points, dtype=torch.float64) / steps
    return torch.cat([grid, 1.0 - grid.sum(dim=1, keepdim=True)], dim=1)


MGDA_CASES = {
    "pair, interior": torch.tensor([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.3]]),
    "pair, one dominates": torch.tensor([[1.0, 0.1, 0.0], [3.0, 0.5, 0.2]]),
    "three, interior": torch.tensor([[1.0, 0.0, 0.2], [-0.4, 1.0, 0.1], [-0.3, -0.6, 0.9]]),
    "three, on an edge": torch.tensor([[1.0, 0.2, 0.0], [-0.3, 1.0, 0.0], [2.0, 2.0, 0.1]]),
    "three, random": torch.randn(3, 5, generator=torch.Generator().manual_seed(3)),
}


@pytest.mark.parametrize("case", sorted(MGDA_CASES))
def test_mgda_gives_the_min_norm_point_of_the_gradients_convex_hull(case: str) -> None:
    matrix = MGDA_CASES[case].double()
    n = matrix.shape[0]
    grid = _simplex(n, 2000 if n == 2 else 300)
    points = grid @ matrix
    best = points[torch.linalg.vector_norm(points, dim=1).argmin()]
    weights, vector, _ = _aggregate(MGDA(_tasks(n)), matrix)
    point, lam = vector / n, weights / n  # the aggregate is T times the min-norm point
    assert bool(torch.all(lam >= 0)) and float(lam.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(point, lam @ matrix)
    # torchjd's Frank-Wolfe iterations stop once a step is shorter than 1e-3 (or after 100): a few thousandths of the
    # gradients' scale from the minimum, as close as the grid's own spacing.
    scale = float(torch.linalg.vector_norm(matrix, dim=1).max())
    assert float(point.norm()) <= float(best.norm()) + 2e-3 * scale
    assert float((point - best).norm()) <= 5e-3 * scale


@pytest.mark.parametrize("seed", range(4))
def test_upgrad_never_conflicts_with_any_task(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    matrix = torch.randn(4, 6, generator=g, dtype=torch.float64)
    matrix[3] = -2.0 * matrix[0] + 0.1 * matrix[3]  # a strong conflict: the plain sum works against some task
    assert bool(torch.any(matrix @ matrix.sum(dim=0) < 0))
    _, vector, cosine = _aggregate(UPGrad(_tasks(4)), matrix)
    # torchjd solves the projections on the Gramian regularised by 1e-4 of its norm: non-negative to that precision.
    assert bool(torch.all(cosine >= -1e-3)), cosine
    torch.testing.assert_close(cosine, torch.nn.functional.cosine_similarity(matrix, vector.unsqueeze(0)))


def test_random_weights_are_the_softmax_of_a_standard_normal_draw() -> None:
    matrix = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    strategy = RandomGrad(_tasks(3))
    torch.manual_seed(11)
    weights, vector, _ = _aggregate(strategy, matrix)
    torch.manual_seed(11)
    expected = torch.softmax(torch.randn(3), dim=0)
    torch.testing.assert_close(weights / 3, expected)
    torch.testing.assert_close(vector, weights @ matrix)
    again, _, _ = _aggregate(strategy, matrix)
    assert not torch.allclose(again, weights)  # a new draw every step


SUMS = ["upgrad", "pcgrad", "imtl-g", "aligned-mtl", "mgda", "dualproj", "graddrop", "random-grad"]


@pytest.mark.parametrize("name", SUMS)
def test_where_every_task_agrees_the_aggregate_is_the_plain_sum(name: str) -> None:
    g = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    strategy = BY_NAME[name](_tasks(3))
    weights, vector, cosine = _aggregate(strategy, torch.stack([g, g, g]))
    torch.testing.assert_close(vector, 3 * g)
    torch.testing.assert_close(cosine, torch.ones(3, dtype=torch.float64))
    if name != "graddrop":
        torch.testing.assert_close(weights.sum(), torch.tensor(3.0, dtype=torch.float64))


def test_cagrad_takes_c_from_the_strategy_options_and_c_zero_is_the_plain_sum(registered: None) -> None:
    tasks = _tasks(2)
    strategy = build_strategy(tasks, TrainConfig(strategy="cagrad", strategy_options={"c": 0.7}))
    assert isinstance(strategy, CAGrad) and strategy.c == 0.7
    assert CAGrad.knobs["c"].default == 0.4 and CAGrad.knobs["c"].searched
    matrix = torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=torch.float64)
    weights, vector, _ = _aggregate(CAGrad(tasks, c=0.0), matrix)
    torch.testing.assert_close(weights, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(vector, matrix.sum(dim=0))
    # A larger c moves the step towards the task that gains least from the average.
    _, wide, _ = _aggregate(strategy, matrix)
    worst = int((matrix @ matrix.sum(dim=0)).argmin())
    assert float(matrix[worst] @ wide) / float(wide.norm()) > float(matrix[worst] @ vector) / float(vector.norm())
    with pytest.raises(ConfigError, match="cagrad's c"):
        build_strategy(tasks, TrainConfig(strategy="cagrad", strategy_options={"c": -1.0}))


@pytest.mark.filterwarnings("ignore:.*not DPP")
def test_nash_mtl_from_the_gramian_gives_the_weights_of_the_jacobian() -> None:
    """The strategy solves Nash-MTL from the Gramian alone: torchjd's weights from J itself."""
    import torchjd.aggregation as jd

    matrix = torch.randn(3, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights, vector, _ = _aggregate(NashMTL(_tasks(3), max_norm=0.0), matrix)
    reference = jd.NashMTL(n_tasks=3, max_norm=0.0).weighting(matrix)
    torch.testing.assert_close(weights, reference.to(weights.dtype), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(vector, weights @ matrix)


# --- the step: host reads, precision, clipping, reports -------------------------------------------------------


@pytest.mark.parametrize("name", ["graddrop", "random-grad"])
def test_device_side_aggregators_read_nothing_on_the_host(tiny: Problem, name: str, registered: None) -> None:
    run = _run(tiny, TrainConfig(strategy=name))
    assert run.jacobian is not None
    losses = _losses(run, tiny)
    with no_host_reads():
        run.strategy.backward(losses, run.jacobian, None)
        run.strategy.on_epoch_end(losses.detach())
    assert all(p.grad is not None for p in run.model.parameters())


def _after_one_step(problem: Problem, config: TrainConfig, scaler: torch.amp.GradScaler | None) -> list[Tensor]:
    run = _run(problem, config)
    run.scaler = scaler
    train_step(run, *problem.load().train.take(slice(0, 32)))  # type: ignore[union-attr]
    return [p.detach().clone() for p in run.model.parameters()]


@pytest.mark.parametrize("name", ["upgrad", "random-grad"])
def test_a_gradient_scaler_sees_unscaled_gradients_and_skips_an_overflowing_step(
    tiny: Problem, name: str, registered: None
) -> None:
    config = TrainConfig(strategy=name, seed=3)
    plain = _after_one_step(tiny, config, None)
    scaled = _after_one_step(tiny, config, torch.amp.GradScaler("cpu", init_scale=2.0**12))
    for a, b in zip(plain, scaled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    run = _run(tiny, config)
    before = [p.detach().clone() for p in run.model.parameters()]
    run.scaler = torch.amp.GradScaler("cpu", init_scale=3e38)  # the scaled losses overflow float32
    train_step(run, *tiny.load().train.take(slice(0, 32)))  # type: ignore[union-attr]
    assert all(torch.equal(a, p) for a, p in zip(before, run.model.parameters(), strict=True))
    assert run.scaler.get_scale() < 3e38


class _NonFinite:
    """Stands for ``TaskJacobian``: the step's gradients overflowed (one infinite entry, one NaN)."""

    def __init__(self, n: int) -> None:
        self.param = nn.Parameter(torch.zeros(4))
        self.matrix = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
        self.matrix[0, 1], self.matrix[-1, 2] = float("inf"), float("nan")

    def backward(self, losses: Tensor, scale: Tensor | None = None) -> TaskGradients:
        return TaskGradients(self.matrix.clone(), [self.param], scale)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_gradients_that_are_not_finite_reach_the_scaler_and_stay_out_of_the_report(name: str) -> None:
    """No solver fails on them; the shared gradient is not finite either, so a scaler skips the step; the epoch's
    means leave the step out."""
    strategy = BY_NAME[name](_tasks(3))
    jacobian = _NonFinite(3)
    strategy.backward(torch.ones(3), jacobian, torch.tensor(8.0))  # type: ignore[arg-type]
    assert jacobian.param.grad is not None and not bool(jacobian.param.grad.isfinite().all())
    strategy.on_epoch_end(torch.ones(3))
    assert torch.equal(strategy.weights(), torch.ones(3))
    assert torch.equal(strategy.report()["cosine"], torch.zeros(3))


def test_clipping_runs_after_the_aggregator_s_backward_pass(tiny: Problem, registered: None) -> None:
    run = _run(tiny, TrainConfig(strategy="pcgrad", clip_grad=1e-3))
    train_step(run, *tiny.load().train.take(slice(0, 32)))  # type: ignore[union-attr]
    grads = [p.grad for p in run.model.parameters() if p.grad is not None]
    assert float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) <= 1e-3 * 1.01


def test_the_report_is_the_epoch_mean_of_the_weights_and_cosines(tiny: Problem, registered: None) -> None:
    run = _run(tiny, TrainConfig(strategy="random-grad"))
    strategy = run.strategy
    assert isinstance(strategy, RandomGrad)
    assert torch.equal(strategy.report()["weight"], torch.ones(3))
    seen: list[Tensor] = []
    original = strategy.aggregate

    def kept(grads: TaskGradients) -> tuple[Tensor, Tensor, Tensor]:
        out = original(grads)
        seen.append(torch.stack([out[0], out[2]]))
        return out

    strategy.aggregate = kept  # type: ignore[method-assign]
    split = tiny.load().train
    for start in (0, 32, 64):
        losses = train_step(run, *split.take(torch.arange(start, start + 32)))  # type: ignore[union-attr]
    strategy.on_epoch_end(losses)
    report = strategy.report()
    mean = torch.stack(seen).mean(dim=0)
    torch.testing.assert_close(report["weight"], mean[0])
    torch.testing.assert_close(report["cosine"], mean[1])
    assert set(report) == {"weight", "cosine"}
    assert float(strategy.combine(torch.tensor([1.0, 2.0, 4.0]))) == 7.0  # the plain sum, for the record


def test_knobs_are_declared_and_checked(registered: None) -> None:
    assert set(AlignedMTL.knobs["scale_mode"].choices or ()) == {"min", "median", "rmse"}
    assert NashMTL.knobs["max_norm"].searched and not NashMTL.knobs["update_weights_every"].searched
    assert GradDrop.knobs["leak"].searched
    for cls in (UPGrad, PCGrad, IMTLG, MGDA, DualProj, RandomGrad):
        assert cls.knobs == {}
    with pytest.raises(ConfigError, match="scale_mode"):
        build_strategy(_tasks(2), TrainConfig(strategy="aligned-mtl", strategy_options={"scale_mode": "max"}))
    with pytest.raises(ConfigError, match="no knob 'c'"):
        build_strategy(_tasks(2), TrainConfig(strategy="upgrad", strategy_options={"c": 0.5}))
    leaky = build_strategy(_tasks(2), TrainConfig(strategy="graddrop", strategy_options={"leak": 1.0}))
    matrix = torch.tensor([[1.0, -2.0], [-1.0, 3.0]])
    _, vector, _ = _aggregate(leaky, matrix)  # type: ignore[arg-type]
    torch.testing.assert_close(vector, matrix.sum(dim=0))  # everything leaks through: the plain sum
