"""FAMO (Liu et al. 2023), random loss weighting (Lin et al. 2022), the geometric loss strategy (Chennupati et al.
2019) and IMTL-L (Liu et al. 2021): each paper's formulas and its behaviour on toys (the contract every registered
strategy keeps is test_strategy_contract.py's)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from tuner.config import ConfigError, TrainConfig
from tuner.problems import Problem, Split, Task, create_problem
from tuner.train import EpochReport, Run, build, resolve_config, train, train_step
from tuner.weighting import Equal, WeightingStrategy, build_strategy
from tuner.weighting._famo import FAMO
from tuner.weighting._gls import GLS
from tuner.weighting._imtl_l import IMTLL
from tuner.weighting._rlw import RLW

NEW: tuple[type[WeightingStrategy], ...] = (FAMO, RLW, GLS, IMTLL)
TASKS = [Task("a", "regression"), Task("b", "regression"), Task("c", "classification", out_dim=3)]


def test_only_imtl_l_gives_the_optimizer_parameters() -> None:
    """FAMO updates its logits itself (its own rate and decay): the training optimizer must not see them."""
    assert [len(list(cls(TASKS).parameters())) for cls in NEW] == [0, 0, 0, 1]


# -- FAMO ----------------------------------------------------------------------------------------------------------


def test_famo_weights_are_c_z_over_the_loss() -> None:
    famo = FAMO(TASKS)
    with torch.no_grad():
        famo.logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
    losses = torch.tensor([0.7, 2.5, 1.1], requires_grad=True)
    total = famo.combine(losses)
    total.backward()
    z = torch.softmax(torch.tensor([0.5, -1.0, 0.2]), dim=0)
    shifted = losses.detach() + 1e-8
    c = 1.0 / float((z / shifted).sum())
    # The gradient of the paper's c sum_i z_i log(L_i + eps), c held constant.
    assert losses.grad is not None
    assert torch.allclose(losses.grad, c * z / shifted)
    assert float(total.detach()) == pytest.approx(float((c * z / shifted * losses.detach()).sum()), rel=1e-6)
    assert torch.allclose(famo.weights(), losses.grad)
    assert float(famo.weights().sum()) == pytest.approx(1.0)
    assert torch.allclose(famo.report()["learned_weight"], z)


def test_famo_moves_weight_to_the_task_whose_log_loss_fell_less() -> None:
    """The first step has nothing to compare; the second compares the log-losses, and one Adam step from zero
    moments moves each logit by the learning rate, against the sign of J_z^T delta."""
    famo = FAMO(TASKS[:2], weight_lr=0.05)
    famo.combine(torch.tensor([1.0, 1.0]))
    assert torch.equal(famo.logits, torch.zeros(2))
    famo.combine(torch.tensor([0.5, 1.0]))  # task a's log-loss fell by log 2, task b's not at all
    assert torch.allclose(famo.logits, torch.tensor([-0.05, 0.05]), atol=1e-6)
    assert float(famo.report()["learned_weight"][1]) > 0.5


def test_famo_refuses_a_rate_or_decay_out_of_range() -> None:
    with pytest.raises(ConfigError, match="weight_lr"):
        FAMO(TASKS, weight_lr=0.0)
    with pytest.raises(ConfigError, match="decay"):
        FAMO(TASKS, decay=-1.0)


def _task_losses(run: Run, inputs: Any, targets: Any) -> Tensor:
    outputs = run.model(inputs)
    return torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in run.tasks])


def _algorithm_1(run: Run, inputs: Any, targets: Any, steps: int, lr: float, decay: float) -> list[Tensor]:
    """The paper's Algorithm 1 as its official code runs it: after each step a second forward pass on the same
    batch gives the new losses; the logits take an Adam step (weight decay gamma) on J_z^T delta. Returns the
    logits after every step."""
    n = len(run.tasks)
    logits = torch.zeros(n, requires_grad=True)
    logit_opt = torch.optim.Adam([logits], lr=lr, weight_decay=decay)
    history = []
    for _ in range(steps):
        shifted = _task_losses(run, inputs, targets) + 1e-8
        z = torch.softmax(logits.detach(), dim=0)
        c = 1.0 / (z / shifted.detach()).sum()
        run.optimizer.zero_grad()
        (c * (z * shifted.log()).sum()).backward()
        run.optimizer.step()
        with torch.no_grad():
            delta = shifted.detach().log() - (_task_losses(run, inputs, targets) + 1e-8).log()
        (grad,) = torch.autograd.grad(torch.softmax(logits, dim=0), logits, grad_outputs=delta)
        logit_opt.zero_grad()
        logits.grad = grad
        logit_opt.step()
        history.append(logits.detach().clone())
    return history


def test_famo_is_algorithm_1_when_the_next_batch_is_the_same_batch(tiny: Problem) -> None:
    """Full-batch training: the next step's losses are the updated model's losses on the step's own batch, so the
    strategy's logits after step k + 1's combine are Algorithm 1's after step k, and both models train alike."""
    split = tiny.load().train
    assert isinstance(split, Split)
    inputs, targets = split.take(slice(None))
    steps, options = 12, {"weight_lr": 0.05, "decay": 1e-2}
    famo_run = build(
        tiny, resolve_config(tiny, TrainConfig(strategy="famo", strategy_options=options)), torch.device("cpu")
    )
    reference_run = build(tiny, resolve_config(tiny, TrainConfig(strategy="equal")), torch.device("cpu"))
    for _ in range(steps):
        train_step(famo_run, inputs, targets)
    reference = _algorithm_1(reference_run, inputs, targets, steps, options["weight_lr"], options["decay"])
    famo = famo_run.strategy
    assert isinstance(famo, FAMO)
    assert float(reference[-2].abs().max()) > 0.1  # the logits moved
    assert torch.allclose(famo.logits, reference[-2], atol=1e-5)
    for ours, theirs in zip(famo_run.model.parameters(), reference_run.model.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def _log_loss_decrease(problem: Problem, config: TrainConfig, since: int) -> Tensor:
    """Each task's decrease of its log training loss from epoch ``since`` to the last epoch."""
    history: list[EpochReport] = []
    train(problem, config, device="cpu", on_epoch_end=history.append)
    logs = torch.tensor([[math.log(t.train_loss) for t in report.tasks.values()] for report in history])
    return logs[since] - logs[-1]


@pytest.mark.slow
def test_famo_balances_the_log_loss_decrease_of_tasks_of_very_different_scales() -> None:
    """GradNorm's toy, sigma 1 and 100 (losses ~1 and ~10^4), in mini-batches: under equal weighting the large task
    owns the shared layers and the small task's loss rises; FAMO's tasks then fall at close rates.

    The paper's decay (1e-3) is of the order of this toy's per-step log-loss decrease (~1e-3), which holds the logits
    near equal; the test uses the low ends of the decay's range and the top of the rate's, to adapt within 60 short
    epochs."""
    toy = create_problem("gradnorm-toy", {"tasks": 2, "n_train": 300, "n_val": 10, "n_test": 10})
    since, epochs = 20, 60  # the rates once the weights have adapted
    equal = _log_loss_decrease(toy, TrainConfig(strategy="equal", epochs=epochs), since)
    options = {"weight_lr": 0.1, "decay": 1e-4}
    famo = _log_loss_decrease(toy, TrainConfig(strategy="famo", strategy_options=options, epochs=epochs), since)
    assert float(equal[0]) < 0 < float(equal[1])
    assert bool(torch.all(famo > 0))
    assert float(famo.min() / famo.max()) > 0.7


# -- random loss weighting -----------------------------------------------------------------------------------------


def test_rlw_weights_are_a_softmax_of_a_standard_normal_draw() -> None:
    """softmax is invertible up to a constant: log w - mean(log w) = x - mean(x), whose coordinates are N(0, 2/3)
    for x ~ N(0, I_3). Every draw sums to 1, each task's mean weight is 1/3, and the losses are weighted by it."""
    rlw = RLW(TASKS, seed=3)
    losses = torch.tensor([0.7, 2.5, 1.1], requires_grad=True)
    total = rlw.combine(losses)
    total.backward()
    assert losses.grad is not None and torch.allclose(losses.grad, rlw.weights())
    draws = []
    for _ in range(4000):
        rlw.combine(losses.detach())
        draws.append(rlw.weights())
    w = torch.stack(draws)
    assert torch.allclose(w.sum(dim=1), torch.ones(len(w)))
    assert torch.allclose(w.mean(dim=0), torch.full((3,), 1 / 3), atol=0.01)
    centred = w.log() - w.log().mean(dim=1, keepdim=True)
    assert torch.allclose(centred.var(dim=0), torch.full((3,), 2 / 3), rtol=0.06)
    # Kolmogorov-Smirnov distance of each coordinate to N(0, 2/3) (5 % critical value ~0.0215 for 4000 draws).
    n = len(centred)
    for column in centred.T:
        cdf = torch.special.ndtr(column.sort().values / math.sqrt(2 / 3))
        ranks = torch.arange(1, n + 1) / n
        distance = torch.maximum((cdf - ranks).abs(), (cdf - (ranks - 1 / n)).abs()).max()
        assert float(distance) < 0.03


def test_rlw_draws_follow_the_run_seed_and_leave_the_global_generator_alone() -> None:
    def draws(seed: int) -> Tensor:
        strategy = build_strategy(TASKS, TrainConfig(strategy="rlw", seed=seed))
        out = []
        for _ in range(5):
            strategy.combine(torch.ones(3))
            out.append(strategy.weights())
        return torch.stack(out)

    torch.manual_seed(0)
    first = draws(7)
    after_draws = torch.rand(4)
    torch.manual_seed(0)
    expected = torch.rand(4)
    assert torch.equal(after_draws, expected)
    assert torch.equal(draws(7), first)
    assert not torch.allclose(draws(8), first)
    assert not torch.allclose(first[0], first[1])  # a new draw every step


# -- geometric loss strategy ---------------------------------------------------------------------------------------


def test_gls_is_the_geometric_mean_and_its_gradient_is_gls_over_t_loss() -> None:
    gls = GLS(TASKS)
    losses = torch.tensor([0.7, 2.5, 1.1], requires_grad=True)
    total = gls.combine(losses)
    total.backward()
    expected = (0.7 * 2.5 * 1.1) ** (1 / 3)
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    assert losses.grad is not None
    assert torch.allclose(losses.grad, expected / (3 * losses.detach()))
    assert torch.allclose(gls.weights(), losses.grad)
    # exp(mean log): a product that overflows float32 (10^60) still gives its finite geometric mean.
    huge = gls.combine(torch.tensor([1e30, 1e30, 1e-10]))
    assert float(huge) == pytest.approx(10 ** (50 / 3), rel=1e-4)


def test_gls_leaves_out_a_task_whose_loss_is_zero() -> None:
    """A masked task with no row in the batch has loss 0: the mean runs over the others, and no gradient is NaN."""
    gls = GLS(TASKS)
    losses = torch.tensor([0.0, 2.0, 8.0], requires_grad=True)
    total = gls.combine(losses)
    total.backward()
    assert float(total.detach()) == pytest.approx(4.0)
    assert losses.grad is not None
    assert torch.allclose(losses.grad, torch.tensor([0.0, 4.0 / (2 * 2.0), 4.0 / (2 * 8.0)]))
    assert torch.allclose(gls.weights(), losses.grad)


def _shared_gradient(problem: Problem, strategy: WeightingStrategy, scale: Tensor) -> Tensor:
    """The gradient on every model parameter of the strategy's loss, with task losses multiplied by ``scale``."""
    torch.manual_seed(0)
    model = problem.build_model(dict(problem.knob_values({})), None)
    split = problem.load().train
    assert isinstance(split, Split)
    inputs, targets = split.take(slice(0, 64))
    outputs = model(inputs)
    losses = torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in problem.tasks])
    strategy.combine(losses * scale).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_gls_step_direction_does_not_depend_on_a_task_loss_scale(tiny: Problem) -> None:
    """Multiplying one task's loss by k multiplies the whole gradient by k^(1/T): every task's direction stays. Under
    equal weighting the scaled task takes the step over."""
    k = torch.tensor([100.0, 1.0, 1.0])
    plain = _shared_gradient(tiny, GLS(tiny.tasks), torch.ones(3))
    scaled = _shared_gradient(tiny, GLS(tiny.tasks), k)
    assert torch.allclose(scaled, plain * 100.0 ** (1 / 3), rtol=1e-4, atol=1e-7)
    equal_plain = _shared_gradient(tiny, Equal(tiny.tasks), torch.ones(3))
    equal_scaled = _shared_gradient(tiny, Equal(tiny.tasks), k)
    assert float(torch.nn.functional.cosine_similarity(equal_plain, equal_scaled, dim=0)) < 0.9


# -- IMTL-L --------------------------------------------------------------------------------------------------------


def test_imtl_l_loss_and_its_gradient_in_s() -> None:
    imtl = IMTLL(TASKS)
    s = torch.tensor([0.3, -0.7, 1.2])
    with torch.no_grad():
        imtl.log_scale.copy_(s)
    losses = torch.tensor([0.7, 2.5, 1.1])
    total = imtl.combine(losses)
    assert float(total.detach()) == pytest.approx(float((s.exp() * losses - s).sum()), rel=1e-6)
    total.backward()
    assert imtl.log_scale.grad is not None
    assert torch.allclose(imtl.log_scale.grad, s.exp() * losses - 1)  # zero where e^s L = 1
    assert torch.allclose(imtl.weights(), s.exp())


def test_imtl_l_scaled_losses_approach_each_other_whatever_the_raw_scales() -> None:
    """GradNorm's toy, losses ~1 and ~10^4: e^s_i L_i head for 1 on both tasks while the raw losses stay 10^4
    apart."""
    toy = create_problem("gradnorm-toy", {"tasks": 2, "n_train": 300, "n_val": 10, "n_test": 10})
    history: list[EpochReport] = []
    train(toy, TrainConfig(strategy="imtl-l", epochs=30, lr_weighting=0.3), device="cpu", on_epoch_end=history.append)

    def scaled(report: EpochReport) -> list[float]:
        return [t.weight * t.train_loss for t in report.tasks.values()]

    first, middle, last = scaled(history[0]), scaled(history[15]), scaled(history[-1])
    raw = [t.train_loss for t in history[-1].tasks.values()]
    assert raw[1] / raw[0] > 5000
    assert first[1] / first[0] > 1000
    assert last[1] / last[0] < middle[1] / middle[0] < 100
    assert last[0] == pytest.approx(1.0, abs=0.1)
