"""GradNorm (Chen et al. 2018): the gradient norms, the weights' update and the paper's toy behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tuner.model import Forward, MultiTaskModel, SharedTap

from tuner.config import TrainConfig
from tuner.problems import Problem, Trunk, create_problem
from tuner.train import TrainResult, build, resolve_config, train, train_step
from tuner.weighting import GradNorm, _gradnorm, per_task_grad_norms

ALPHA = 0.12


@pytest.fixture(scope="module")
def toy() -> Problem:
    return create_problem("gradnorm-toy", {"tasks": 2, "n_train": 1000, "n_val": 300})


def _losses(
    problem: Problem, model: MultiTaskModel, x: torch.Tensor, ys: dict[str, torch.Tensor], tap: bool
) -> tuple[Forward, torch.Tensor]:
    fwd = model(x, tap=tap)
    return fwd, torch.stack([t.loss(o, ys[t.name]) for t, o in zip(problem.tasks, fwd.outputs, strict=True)])


def _brute_force_norms(
    problem: Problem, model: MultiTaskModel, x: torch.Tensor, ys: dict[str, torch.Tensor]
) -> torch.Tensor:
    """||grad_W L_i|| over the last shared layer's weight and bias, one autograd call per task."""
    layer = model.last_shared_layer()
    _, losses = _losses(problem, model, x, ys, tap=False)
    norms = []
    for loss in losses:
        gw, gb = torch.autograd.grad(loss, [layer.weight, layer.bias], retain_graph=True)
        norms.append(torch.cat([gw.flatten(), gb]).norm())
    return torch.stack(norms)


def test_per_task_grad_norms_match_one_autograd_call_per_task() -> None:
    problem = create_problem("gradnorm-toy", {"tasks": 3, "n_train": 64, "n_val": 10})
    split = problem.load().train
    torch.manual_seed(0)
    model = MultiTaskModel(problem.tasks, problem.build_trunk(32, 3))
    w = torch.tensor([0.5, 1.0, 2.0])
    fwd, losses = _losses(problem, model, split.x, split.y, tap=True)
    (w * losses).sum().backward()
    expected = w * _brute_force_norms(problem, model, split.x, split.y)
    assert fwd.tap is not None
    assert torch.allclose(per_task_grad_norms(fwd.tap), expected, rtol=1e-4)


@pytest.mark.parametrize("activation", [nn.Tanh(), nn.GELU()], ids=["tanh", "gelu"])
def test_per_task_grad_norms_with_another_activation(activation: nn.Module) -> None:
    problem = create_problem("gradnorm-toy", {"tasks": 3, "n_train": 64, "n_val": 10})
    split = problem.load().train
    torch.manual_seed(0)
    trunk = Trunk(nn.Sequential(nn.Linear(250, 32), nn.Tanh()), nn.Linear(32, 24), activation)
    model = MultiTaskModel(problem.tasks, trunk)
    fwd, losses = _losses(problem, model, split.x, split.y, tap=True)
    losses.sum().backward()
    assert fwd.tap is not None
    assert torch.allclose(per_task_grad_norms(fwd.tap), _brute_force_norms(problem, model, split.x, split.y), rtol=1e-4)


def test_only_the_weights_receive_the_gradnorm_gradient_in_closed_form(toy: Problem) -> None:
    config = resolve_config(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA))
    model, strategy, _ = build(toy, config, torch.device("cpu"))
    assert isinstance(strategy, GradNorm)
    split = toy.load().train
    x, ys = split.x[:100], {k: v[:100] for k, v in split.y.items()}
    with torch.no_grad():
        strategy.w.copy_(torch.tensor([1.5, 0.5]))
    fwd, losses = _losses(toy, model, x, ys, tap=True)
    strategy.combine(losses).backward()
    strategy.initial_losses = torch.tensor([2.0, 5000.0])  # as if measured on an earlier batch
    network_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    strategy.after_backward(losses.detach(), fwd.tap)

    # The network's gradients are those of sum_i w_i L_i, untouched by GradNorm's own update.
    after = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(network_grads, after, strict=True))
    # d/dw_i sum_j |G_j - target_j| with the target held constant = sign(G_i - target_i) * ||grad_W L_i||.
    raw = _brute_force_norms(toy, model, x, ys)
    g = strategy.w.detach() * raw
    ratio = losses.detach() / strategy.initial_losses
    target = g.mean() * (ratio / ratio.mean()) ** ALPHA
    assert strategy.w.grad is not None
    assert torch.allclose(strategy.w.grad, torch.sign(g - target) * raw, rtol=1e-4)


def test_initial_losses_are_the_first_training_batch_losses(toy: Problem) -> None:
    config = resolve_config(toy, TrainConfig(strategy="gradnorm"))
    model, strategy, optimizer = build(toy, config, torch.device("cpu"))
    assert isinstance(strategy, GradNorm)
    split = toy.load().train
    first, second = (
        train_step(model, strategy, optimizer, split.x[idx], [split.y[n][idx] for n in toy.task_names])
        for idx in (torch.arange(0, 100), torch.arange(100, 200))
    )
    assert torch.equal(strategy.initial_losses, first)
    assert not torch.equal(strategy.initial_losses, second)


def test_weights_sum_to_t_every_step_and_the_small_task_gains_weight(
    toy: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed: list[torch.Tensor] = []
    original = GradNorm.after_step

    def after_step(self: GradNorm) -> None:
        original(self)
        observed.append(self.w.detach().clone())

    monkeypatch.setattr(GradNorm, "after_step", after_step)
    result = train(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA, epochs=4), device="cpu")
    assert len(observed) == 4 * 10  # 1000 samples, batch 100: every step was seen
    weights = torch.stack(observed)
    assert torch.allclose(weights.sum(dim=1), torch.full((len(observed),), 2.0), atol=1e-5)
    assert bool(torch.all(weights > 0))
    # t0 has sigma = 1, t1 sigma = 100: t1's gradients dwarf t0's, so GradNorm lifts t0's weight above 1.
    assert result.final.tasks["t0"].weight > 1.0
    assert float(weights[-1, 0]) == pytest.approx(result.final.tasks["t0"].weight)


def _spread(problem: Problem, result: TrainResult) -> float:
    """sum_i |G_i - target_i| / sum_i target_i on the validation split, with the run's final weights."""
    assert result.model is not None
    names = problem.task_names
    val = problem.load().val
    weights = torch.tensor([result.final.tasks[n].weight for n in names])
    reference = torch.tensor([result.reference[n] for n in names])
    fwd, losses = _losses(problem, result.model, val.x, val.y, tap=True)
    (weights * losses).sum().backward()
    assert fwd.tap is not None
    g = per_task_grad_norms(fwd.tap)
    ratio = losses.detach() / reference
    target = g.mean() * (ratio / ratio.mean()) ** ALPHA
    return float((g - target).abs().sum() / target.sum())


def test_gradnorm_pulls_the_gradient_norms_towards_their_targets(toy: Problem) -> None:
    equal = train(toy, TrainConfig(strategy="equal", epochs=6), device="cpu")
    gradnorm = train(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA, epochs=6), device="cpu")
    spread_equal, spread_gradnorm = _spread(toy, equal), _spread(toy, gradnorm)
    assert spread_gradnorm < 0.6 * spread_equal, (spread_equal, spread_gradnorm)


@pytest.mark.parametrize("collapse_every", [3, 256])
def test_the_epoch_report_carries_mean_gradient_norms_and_targets(
    toy: Problem, monkeypatch: pytest.MonkeyPatch, collapse_every: int
) -> None:
    monkeypatch.setattr(_gradnorm, "COLLAPSE_EVERY", collapse_every)
    seen: list[torch.Tensor] = []

    def recording(tap: SharedTap) -> torch.Tensor:
        g = per_task_grad_norms(tap)
        seen.append(g)
        return g

    monkeypatch.setattr(_gradnorm, "per_task_grad_norms", recording)
    result = train(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA, epochs=2), device="cpu")
    last_epoch = torch.stack(seen[10:]).mean(dim=0)  # 1000 samples, batch 100: ten steps an epoch
    for i, task in enumerate(result.final.tasks.values()):
        assert task.grad_norm == pytest.approx(float(last_epoch[i]), rel=1e-5)
        assert task.grad_norm_target is not None and task.grad_norm_target > 0
