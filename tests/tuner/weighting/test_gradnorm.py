"""GradNorm (Chen et al. 2018): the gradient norms, the weights' update and the paper's toy behaviour."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from tests.tuner.conftest import TinyMixed
from tuner import gradients
from tuner.config import Chain, TrainConfig
from tuner.gradients import GradNormTap, TaskNorms, task_grad_norms
from tuner.problems import (
    Dataset,
    Defaults,
    ParameterGroups,
    Problem,
    SharedBottom,
    Split,
    Task,
    create_problem,
    mlp,
)
from tuner.train import TrainResult, build, resolve_config, train, train_step
from tuner.weighting import GradNorm, _gradnorm

ALPHA = 0.12


@pytest.fixture(scope="module")
def toy() -> Problem:
    return create_problem("gradnorm-toy", {"tasks": 2, "n_train": 1000, "n_val": 300})


class ConvNet(nn.Module):
    """A user's own layout: ``encoder`` ends in a Conv2d (B x C x H x W features), ``seg`` and ``depth`` are
    per-pixel conv decoders; nothing is called ``shared`` or ``heads``."""

    def __init__(self, width: int = 6, inplace_heads: bool = False) -> None:
        super().__init__()
        self.inplace_heads = inplace_heads
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1)
        )
        self.seg = self.decoder(width, 3, inplace_heads)
        self.depth = self.decoder(width, 1, inplace_heads)

    @staticmethod
    def decoder(width: int, out: int, inplace: bool) -> nn.Sequential:
        return nn.Sequential(
            nn.ReLU(inplace=inplace), nn.ConvTranspose2d(width, width, 2, stride=2), nn.ReLU(), nn.Conv2d(width, out, 1)
        )

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.encoder(images)
        if self.inplace_heads:  # each decoder modifies its input in place: each gets a copy of its own
            return {"seg": self.seg(features.clone()), "depth": self.depth(features.clone())}
        return {"seg": self.seg(features), "depth": self.depth(features)}


class TinySegDepth(Problem):
    """Per-pixel class (is the pixel bright?) and per-pixel value of 8x8 noise images."""

    name: ClassVar[str] = "tiny-segdepth"

    @property
    def tasks(self) -> list[Task]:
        return [Task("seg", "classification", out_dim=3, metric="miou"), Task("depth", "l1", metric="mae")]

    def load(self) -> Dataset:
        g = torch.Generator().manual_seed(self.options.seed)
        images = torch.randn(48, 1, 8, 8, generator=g)
        seg = torch.bucketize(images[:, 0], torch.tensor([-0.5, 0.5]))
        targets = {"seg": seg, "depth": images.abs()}
        return Dataset(
            train=Split(images[:32], {k: v[:32] for k, v in targets.items()}),
            val=Split(images[32:], {k: v[32:] for k, v in targets.items()}),
        )

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return ConvNet()

    def parameter_groups(self, model: nn.Module) -> ParameterGroups:
        assert isinstance(model, ConvNet)
        return ParameterGroups(
            list(model.encoder.parameters()),
            {"seg": list(model.seg.parameters()), "depth": list(model.depth.parameters())},
        )

    def last_shared_layer(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, ConvNet)
        return model.encoder[2]

    @property
    def defaults(self) -> Defaults:
        return Defaults(lr_shared=1e-2, lr_heads=1e-2, batch_size=16, epochs=2)


class DropoutTrunk(TinyMixed):
    """TinyMixed with dropout after every shared layer, the last one included."""

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return SharedBottom(self.tasks, mlp(6, 16, 2, dropout=0.5), 16, chain)


class SmoothTrunk(TinyMixed):
    """TinyMixed whose shared layers are a tanh layer and a last layer followed by GELU."""

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU())
        return SharedBottom(self.tasks, trunk, 16, chain)


class LinearEnd(TinyMixed):
    """TinyMixed whose trunk ends in a bias-free nn.Linear, with nothing after it: the heads read its output."""

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        trunk = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16, bias=False))
        return SharedBottom(self.tasks, trunk, 16, chain)


class InplaceReluEnd(TinyMixed):
    """TinyMixed whose last shared nn.Linear is followed by ReLU(inplace=True): the layer's output tensor becomes the
    ReLU's result, whose gradient is not the layer's."""

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        trunk = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(inplace=True))
        return SharedBottom(self.tasks, trunk, 16, chain)


class Tokens(nn.Module):
    """A Linear layer on every one of 2 tokens (a B x 2 x 3 input), scaled SiLU after it, heads on the flattened
    tokens."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.shared = nn.Linear(3, 8)
        self.heads = nn.ModuleDict({t.name: nn.Sequential(nn.Flatten(), nn.Linear(16, t.out_dim)) for t in tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        tokens = torch.nn.functional.silu(self.shared(x.view(-1, 2, 3))) * 0.5
        return {name: head(tokens) for name, head in self.heads.items()}


class TokenTrunk(TinyMixed):
    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return Tokens(self.tasks)


class InplaceHeads(TinySegDepth):
    """Decoders that start with ReLU(inplace=True) on their input."""

    def build_model(self, knobs: Mapping[str, Any], chain: Chain | None) -> nn.Module:
        return ConvNet(inplace_heads=True)


class ZeroSource(TinyMixed):
    """TinyMixed whose chain source ``c`` has a loss with zero gradient: any gradient its head receives comes from
    the target ``a`` it feeds."""

    @property
    def tasks(self) -> list[Task]:
        zero = Task("c", lambda pred, target: (pred * 0.0).sum(), out_dim=3, metric="accuracy")
        return [Task("a", "regression"), Task("b", "regression"), zero]


# --- the gradient norms --------------------------------------------------------------------------------------


@contextmanager
def _counting_autograd(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every ``torch.autograd.grad`` and ``backward`` call made inside the context, by name."""
    calls: list[str] = []
    for name in ("grad", "backward"):
        original = getattr(torch.autograd, name)

        def counted(*args: Any, _name: str = name, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            calls.append(f"{_name} (batched)" if kwargs.get("is_grads_batched") else _name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, name, counted)
    yield calls
    monkeypatch.undo()


def _reference(losses: Tensor, params: Sequence[Tensor]) -> Tensor:
    """||grad_W L_i|| from one autograd call per task: what the tap must match without making them."""
    grads = [torch.autograd.grad(loss, params, retain_graph=True) for loss in losses]
    return torch.stack([torch.cat([g.flatten() for g in per_task]).norm() for per_task in grads])


def _head(model: nn.Module, task: str) -> nn.Module:
    heads = model.heads
    assert isinstance(heads, nn.ModuleDict)
    return heads[task]


def _step_norms(
    problem: Problem, config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[Tensor, Tensor, list[str], int]:
    """GradNorm's norms for one batch, the per-task reference from the same forward pass (so with the same dropout
    mask), the autograd calls the tap made and how often it fell back to ``task_grad_norms``."""
    config = resolve_config(problem, config.model_copy(update={"strategy": "gradnorm"}))
    run = build(problem, config, torch.device("cpu"))
    assert run.grad_norms is not None
    run.model.train()
    inputs, targets = next(problem.load().train.batches(16))  # type: ignore[union-attr]
    with run.grad_norms.recording():
        outputs = run.model(inputs)
    losses = torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in problem.tasks])
    reference = _reference(losses, run.grad_norms.params)
    weights = torch.linspace(0.5, 1.5, len(problem.tasks))
    fallbacks: list[int] = []

    def counted(losses: Tensor, params: Sequence[Tensor]) -> Tensor:
        fallbacks.append(len(params))
        return task_grad_norms(losses, params)

    monkeypatch.setattr(gradients, "task_grad_norms", counted)
    with _counting_autograd(monkeypatch) as calls:
        norms = run.grad_norms.backward(losses, (weights * losses).sum())
    return norms.norms, reference, calls, len(fallbacks)


CASES: dict[str, Callable[[], tuple[Problem, TrainConfig]]] = {
    "mlp": lambda: (create_problem("gradnorm-toy", {"tasks": 4, "n_train": 32, "n_val": 10}), TrainConfig()),
    "conv": lambda: (TinySegDepth.create(), TrainConfig()),
    "dropout": lambda: (DropoutTrunk.create(), TrainConfig()),
    "gelu": lambda: (SmoothTrunk.create(), TrainConfig()),
    "linear-end": lambda: (LinearEnd.create(), TrainConfig()),
    "inplace-relu": lambda: (InplaceReluEnd.create(), TrainConfig()),
    "tokens": lambda: (TokenTrunk.create(), TrainConfig()),
}
#: Cases whose last shared layer is an nn.Linear with only elementwise operations after it: closed-form norms.
LINEAR = {"mlp", "dropout", "gelu", "linear-end", "inplace-relu", "tokens"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_norms_are_exact_from_a_constant_number_of_autograd_calls(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem, config = CASES[case]()
    norms, reference, calls, fallbacks = _step_norms(problem, config, monkeypatch)
    torch.testing.assert_close(norms, reference, rtol=1e-5, atol=0.0)
    assert bool(torch.all(reference > 0))
    assert not norms.requires_grad  # numbers for the weights' update, not part of the step's graph
    # The step's backward pass and one batched pass from the heads' one input, whatever the number of tasks (the MLP
    # has four); on a Linear layer no batched pass, at most a plain one for the derivative of what follows it.
    assert fallbacks == 0 and len(calls) <= 2, calls
    if case in LINEAR:
        assert not any("batched" in c for c in calls), calls
    if case in ("mlp", "linear-end", "inplace-relu"):  # ReLU's derivative is its mask; nothing after the layer
        assert calls == ["backward"]


@pytest.mark.parametrize(("rows", "width"), [(64, 16), (8, 16)], ids=["products", "gram"])
def test_every_task_s_product_norm_is_its_own(rows: int, width: int) -> None:
    """||g_i^T x|| for tasks side by side in g, from the products or from the N x N Gram matrices."""
    g, x = torch.randn(rows, 3 * width), torch.randn(rows, width)
    expected = torch.stack([torch.linalg.norm(g[:, i * width : (i + 1) * width].T @ x) for i in range(3)])
    torch.testing.assert_close(gradients._outer_norms(g, x, 3), expected, rtol=1e-5, atol=0.0)


def test_heads_reading_different_inputs_get_exact_norms_from_one_pass_per_input(
    tiny: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a detached chain the target's head reads the shared features and the source's prediction: two inputs."""
    config = TrainConfig(chain=Chain(source="c", target="a", mode="detach"))
    norms, reference, calls, fallbacks = _step_norms(tiny, config, monkeypatch)
    torch.testing.assert_close(norms, reference, rtol=1e-5, atol=0.0)
    assert fallbacks == 0 and calls == ["backward", "grad (batched)", "grad (batched)"]


@pytest.mark.parametrize(
    ("problem", "config"),
    [
        (TinyMixed.create(), TrainConfig(chain=Chain(source="c", target="a", mode="through"))),
        (InplaceHeads.create(), TrainConfig()),
    ],
    ids=["chain-through", "inplace-heads"],
)
def test_models_the_views_cannot_serve_get_the_exact_batched_call_instead(
    problem: Problem, config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain through which the target's gradient reaches the source's head; heads modifying their input in place."""
    norms, reference, _, fallbacks = _step_norms(problem, config, monkeypatch)
    torch.testing.assert_close(norms, reference, rtol=1e-5, atol=0.0)
    assert fallbacks == 1


def _recorded_losses(tiny: Problem) -> tuple[Any, Tensor]:
    """A GradNorm run of ``tiny`` and its per-task losses on 32 samples, the forward pass recorded by its tap."""
    run = build(tiny, resolve_config(tiny, TrainConfig(strategy="gradnorm")), torch.device("cpu"))
    assert run.grad_norms is not None
    inputs, targets = tiny.load().train.take(slice(0, 32))  # type: ignore[union-attr]
    with run.grad_norms.recording():
        outputs = run.model(inputs)
    return run, torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in tiny.tasks])


def test_the_step_sends_every_parameter_the_plain_backward_gradient(tiny: Problem) -> None:
    run, losses = _recorded_losses(tiny)
    loss = (torch.tensor([0.3, 1.2, 1.5]) * losses).sum()
    params = [p for p in run.model.parameters()]
    expected = torch.autograd.grad(loss, params, retain_graph=True)
    run.grad_norms.backward(losses, loss)
    for p, g in zip(params, expected, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)


def test_recording_leaves_the_model_s_modules_as_they_were(tiny: Problem) -> None:
    """The recorded pass wraps the heads' and the layer's ``forward``; afterwards, even after an error, every
    module's ``forward`` is its own again, including one the user had set on the instance."""
    run = build(tiny, resolve_config(tiny, TrainConfig(strategy="gradnorm")), torch.device("cpu"))
    tap = run.grad_norms
    assert tap is not None
    inputs, _ = tiny.load().train.take(slice(0, 8))  # type: ignore[union-attr]
    own = tap.heads[0][0]
    calls: list[int] = []
    original = own.forward

    def users_forward(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    own.forward = users_forward  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the user's error"), tap.recording():
        run.model(inputs)
        assert len(tap._views) == len(tiny.tasks)  # every head read a view, the user's forward included
        raise RuntimeError("the user's error")
    assert calls == [1]
    assert vars(own)["forward"] is users_forward
    watched = [m for modules in tap.heads for m in modules if m is not own] + [tap.layer]
    assert all("forward" not in vars(m) for m in watched)
    recorded = len(tap._views)
    run.model(inputs)
    assert calls == [1, 1] and len(tap._views) == recorded  # outside the context nothing is recorded


class _AliasedHead(nn.Module):
    """Task a's head is held under two names, so ``task_modules`` finds it twice."""

    def __init__(self) -> None:
        super().__init__()
        self.layer, self.h0, self.h1 = nn.Linear(4, 8), nn.Linear(8, 1), nn.Linear(8, 1)
        self.heads = nn.ModuleList([self.h0, self.h1])

    def forward(self, x: Tensor) -> list[Tensor]:
        z = torch.relu(self.layer(x))
        return [self.h0(z), self.h1(z)]


def test_a_head_held_under_two_names_is_wrapped_once_and_gets_exact_norms() -> None:
    torch.manual_seed(0)
    model = _AliasedHead()
    tap = GradNormTap.of(model, model.layer, [list(model.h0.parameters()), list(model.h1.parameters())])
    assert sum(m is model.h0 for m in tap.heads[0]) == 2
    with tap.recording():
        outputs = model(torch.randn(5, 4))
    losses = torch.stack([o.pow(2).mean() for o in outputs])
    reference = _reference(losses, tap.params)
    torch.testing.assert_close(tap.backward(losses, losses.sum()).norms, reference, rtol=1e-5, atol=0.0)
    assert all("forward" not in vars(m) for m in model.modules())


def test_a_head_tied_to_the_layer_s_weight_gets_the_exact_path() -> None:
    """Task b's head reads W itself: the closed form, which sees W only through the views, must not be taken."""
    torch.manual_seed(0)
    layer, h0, h1 = nn.Linear(8, 8), nn.Linear(8, 1), nn.Linear(8, 8)
    h1.weight = layer.weight
    tap = GradNormTap(layer, [[h0], [h1]])
    with tap.recording():
        z = torch.relu(layer(torch.randn(5, 8)))
        losses = torch.stack([h0(z).pow(2).mean(), h1(z).pow(2).mean()])
    reference = _reference(losses, tap.params)
    torch.testing.assert_close(tap.backward(losses, losses.sum()).norms, reference, rtol=1e-5, atol=0.0)


def test_losses_whose_gradient_the_caller_keeps_still_get_exact_norms(tiny: Problem) -> None:
    """The tap reads the tasks' weights from the losses' gradient; a caller that keeps it too keeps its own."""
    run, losses = _recorded_losses(tiny)
    losses.retain_grad()
    losses.sum().backward(retain_graph=True)  # an earlier pass of the caller's own: losses.grad is all ones
    reference = _reference(losses, run.grad_norms.params)
    prior = losses.grad.clone()  # type: ignore[union-attr]
    weights = torch.tensor([0.3, 1.2, 1.5])
    norms = run.grad_norms.backward(losses, (weights * losses).sum()).norms
    torch.testing.assert_close(norms, reference, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(losses.grad, prior + weights)


def test_a_model_without_task_modules_still_gets_its_norms() -> None:
    """Heads found from the parameter groups; a layer with no head modules falls back and stays exact."""
    problem = create_problem("gradnorm-toy", {"tasks": 3, "n_train": 32, "n_val": 10})
    model = problem.build_model({"hidden": 8, "depth": 2}, None)
    groups = problem.parameter_groups(model)
    layer = problem.last_shared_layer(model)
    found = gradients.task_modules(model, [groups.tasks[n] for n in problem.task_names])
    assert found == [[_head(model, n)] for n in problem.task_names]
    tap = GradNormTap(layer, [[] for _ in problem.tasks])
    inputs, targets = problem.load().train.take(slice(0, 16))  # type: ignore[union-attr]
    with tap.recording():
        outputs = model(inputs)
    losses = torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in problem.tasks])
    expected = task_grad_norms(losses, list(layer.parameters()))
    torch.testing.assert_close(tap.backward(losses, losses.sum()).norms, expected, rtol=1e-6, atol=0.0)


# --- the weights' update --------------------------------------------------------------------------------------


def test_only_the_weights_receive_the_gradnorm_gradient_in_closed_form(toy: Problem) -> None:
    run = build(toy, resolve_config(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA)), torch.device("cpu"))
    strategy, tap = run.strategy, run.grad_norms
    assert isinstance(strategy, GradNorm) and tap is not None
    inputs, targets = toy.load().train.take(slice(0, 100))  # type: ignore[union-attr]
    with torch.no_grad():
        strategy.w.copy_(torch.tensor([1.5, 0.5]))
    with tap.recording():
        outputs = run.model(inputs)
    losses = torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in toy.tasks])
    raw = _reference(losses, tap.params)
    combined = strategy.combine(losses)
    params = list(run.model.parameters())
    expected = torch.autograd.grad(combined, params, retain_graph=True)
    norms = tap.backward(losses, combined)
    strategy.initial_losses = torch.tensor([2.0, 5000.0])  # as if measured on an earlier batch
    strategy.after_backward(losses.detach(), norms)

    # The network's gradients are those of sum_i w_i L_i: no second-order term of GradNorm's own objective.
    for p, g in zip(params, expected, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)
    # d/dw_i sum_j |G_j - target_j| with the target held constant = sign(G_i - target_i) * ||grad_W L_i||.
    g = strategy.w.detach() * raw
    ratio = losses.detach() / strategy.initial_losses
    target = g.mean() * (ratio / ratio.mean()) ** ALPHA
    assert strategy.w.grad is not None
    torch.testing.assert_close(strategy.w.grad, torch.sign(g - target) * raw, rtol=1e-5, atol=0.0)


def test_initial_losses_are_the_first_training_batch_losses(toy: Problem) -> None:
    run = build(toy, resolve_config(toy, TrainConfig(strategy="gradnorm")), torch.device("cpu"))
    assert isinstance(run.strategy, GradNorm)
    split = toy.load().train
    assert isinstance(split, Split)
    first, second = (train_step(run, *split.take(slice(start, start + 100))) for start in (0, 100))
    assert torch.equal(run.strategy.initial_losses, first)
    assert not torch.equal(run.strategy.initial_losses, second)


def test_weights_sum_to_t_every_step_and_the_small_task_gains_weight(
    toy: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed: list[Tensor] = []
    original = GradNorm.after_step

    def after_step(self: GradNorm) -> None:
        original(self)
        observed.append(self.w.detach().clone())

    monkeypatch.setattr(GradNorm, "after_step", after_step)
    result = train(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA, epochs=4), device="cpu")
    assert len(observed) == 4 * 10  # 1000 samples, batch 100: every step was seen
    weights = torch.stack(observed)
    torch.testing.assert_close(weights.sum(dim=1), torch.full((len(observed),), 2.0), rtol=0.0, atol=1e-5)
    assert bool(torch.all(weights > 0))
    # t0 has sigma = 1, t1 sigma = 100: t1's gradients dwarf t0's, so GradNorm lifts t0's weight above 1.
    assert result.final.tasks["t0"].weight > 1.0
    assert float(weights[-1, 0]) == pytest.approx(result.final.tasks["t0"].weight)


def test_with_fp16_a_step_whose_scaled_gradients_overflowed_leaves_the_epoch_means(tiny: Problem) -> None:
    strategy = GradNorm.from_config(tiny.tasks, TrainConfig(strategy="gradnorm", precision="fp16"))
    assert isinstance(strategy, GradNorm)
    losses = torch.tensor([1.0, 2.0, 3.0])
    strategy.combine(losses)
    for norms in ([1.0, 2.0, 3.0], [float("inf"), 4.0, 5.0]):
        strategy.after_backward(losses, TaskNorms.of(torch.tensor(norms), torch.ones(3)))
    strategy.on_epoch_end(losses)
    torch.testing.assert_close(strategy.report()["grad_norm"], torch.tensor([1.0, 2.0, 3.0]))  # w = 1
    assert bool(torch.all(strategy.report()["grad_norm_target"].isfinite()))


def test_the_epoch_s_targets_stay_exact_when_far_below_g() -> None:
    """A task whose loss fell a thousandfold has a target ~1e-9 of its G at alpha = 3: reported as computed."""
    tasks = [Task(name, "regression") for name in "abc"]
    strategy = GradNorm(tasks, alpha=3.0)
    generator = torch.Generator().manual_seed(1)
    expected = []
    for step in range(21):  # the first step takes L(0), in an epoch of its own
        losses = torch.tensor([1.0, 1.0, 1.0 if step == 0 else 1e-3]) * (1 + 0.1 * torch.rand(3, generator=generator))
        norms = 1 + torch.rand(3, generator=generator)
        strategy.combine(losses)  # the weights stay 1: no optimizer step
        strategy.after_backward(losses, TaskNorms.of(norms, torch.ones(3)))
        if step == 0:
            strategy.on_epoch_end(losses)
            continue
        ratio = (losses / strategy.initial_losses).double()
        expected.append(norms.double().mean() * (ratio / ratio.mean()) ** 3.0)
    strategy.on_epoch_end(losses)
    reported = strategy.report()["grad_norm_target"]
    torch.testing.assert_close(reported.double(), torch.stack(expected).mean(dim=0), rtol=1e-5, atol=0.0)
    assert 0.0 < float(reported[2]) < 1e-7


# --- the paper's toy behaviour and the report -----------------------------------------------------------------


def _spread(problem: Problem, result: TrainResult) -> float:
    """sum_i |G_i - target_i| / sum_i target_i on the validation split, with the run's final weights."""
    assert result.model is not None
    names = problem.task_names
    inputs, targets = problem.load().val.take(slice(None))  # type: ignore[union-attr]
    weights = torch.tensor([result.final.tasks[n].weight for n in names])
    reference = torch.tensor([result.reference[n] for n in names])
    outputs = result.model(inputs)
    losses = torch.stack([t.compute_loss(outputs[t.name], targets[t.name]) for t in problem.tasks])
    g = weights * task_grad_norms(losses, list(problem.last_shared_layer(result.model).parameters()))
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
    seen: list[Tensor] = []
    original = GradNorm.after_backward

    def after_backward(self: GradNorm, losses: Tensor, grad_norms: TaskNorms | None) -> None:
        assert grad_norms is not None
        seen.append(self.w.detach() * grad_norms.norms)  # G_i = w_i ||grad_W L_i||
        original(self, losses, grad_norms)

    monkeypatch.setattr(GradNorm, "after_backward", after_backward)
    result = train(toy, TrainConfig(strategy="gradnorm", alpha=ALPHA, epochs=2), device="cpu")
    last_epoch = torch.stack(seen[10:]).mean(dim=0)  # 1000 samples, batch 100: ten steps an epoch
    for i, task in enumerate(result.final.tasks.values()):
        assert task.grad_norm == pytest.approx(float(last_epoch[i]), rel=1e-5)
        assert task.grad_norm_target is not None and task.grad_norm_target > 0


# --- any model ------------------------------------------------------------------------------------------------


def test_gradnorm_trains_a_conv_model_with_its_own_parameter_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    fallbacks: list[Sequence[Tensor]] = []
    monkeypatch.setattr(gradients, "task_grad_norms", lambda losses, params: fallbacks.append(params))
    result = train(TinySegDepth.create(), TrainConfig(strategy="gradnorm"), device="cpu")
    assert len(result.history) == 2 and not fallbacks
    tasks = result.final.tasks.values()
    assert sum(t.weight for t in tasks) == pytest.approx(2.0, abs=1e-5)
    for t in tasks:
        assert t.weight > 0 and t.grad_norm is not None and t.grad_norm > 0
        assert t.grad_norm_target is not None and t.grad_norm_target > 0


@pytest.mark.parametrize(("mode", "reaches_source"), [("detach", False), ("through", True)])
def test_a_detached_chain_sends_the_source_head_nothing_from_the_target(mode: str, reaches_source: bool) -> None:
    problem = ZeroSource.create()
    config = resolve_config(problem, TrainConfig(strategy="gradnorm", chain=Chain(source="c", target="a", mode=mode)))
    run = build(problem, config, torch.device("cpu"))
    train_step(run, *problem.load().train.take(slice(0, 32)))  # type: ignore[union-attr]
    source = [p.grad for p in _head(run.model, "c").parameters()]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in source) == reaches_source
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in _head(run.model, "a").parameters())
