"""Hard parameter sharing and task chaining (source's estimate as a feature of the target)."""

from __future__ import annotations

import pytest
import torch

from tuner.config import Chain
from tuner.model import MultiTaskModel
from tuner.problems import Problem, ProblemError
from tuner.weighting import per_task_grad_norms


def _model(problem: Problem, chain: Chain | None) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(problem.tasks, problem.build_trunk(16, 2), chain)


def _target_loss_grads(problem: Problem, mode: str) -> tuple[MultiTaskModel, torch.Tensor]:
    """Backpropagate the target task ("a") alone; the source is the classification task "c"."""
    model = _model(problem, Chain(source="c", target="a", mode=mode))
    split = problem.load().train
    out = model(split.x).outputs
    loss = problem.task("a").loss(out[0], split.y["a"])
    loss.backward()
    return model, loss


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_detach_gives_the_source_head_exactly_zero_gradient_from_the_target(tiny: Problem) -> None:
    model, _ = _target_loss_grads(tiny, "detach")
    assert _grad_norm(model.heads[2]) == 0.0
    assert _grad_norm(model.heads[0]) > 0  # the target itself still learns
    assert _grad_norm(model.trunk) > 0  # through its own head


def test_through_lets_the_target_train_the_source_head(tiny: Problem) -> None:
    model, _ = _target_loss_grads(tiny, "through")
    assert _grad_norm(model.heads[2]) > 0


def test_the_target_head_reads_the_source_prediction(tiny: Problem) -> None:
    model = _model(tiny, Chain(source="c", target="a"))
    assert model.heads[0].in_features == 16 + 3  # the trunk's width plus c's class probabilities
    assert model.heads[1].in_features == 16
    assert _model(tiny, Chain(source="c", target="a", mode="none")).heads[0].in_features == 16


def test_a_chain_naming_an_unknown_task_is_refused(tiny: Problem) -> None:
    with pytest.raises(ProblemError, match="'zz'"):
        _model(tiny, Chain(source="zz", target="a"))
    with pytest.raises(ValueError, match="same task"):
        Chain(source="a", target="a")
    assert Chain.parse("c:a:through") == Chain(source="c", target="a", mode="through")
    assert Chain.parse("c:a").mode == "detach"


@pytest.mark.parametrize("mode", ["none", "detach", "through"])
def test_the_tap_changes_no_output(tiny: Problem, mode: str) -> None:
    model = _model(tiny, Chain(source="c", target="a", mode=mode))
    x = tiny.load().val.x
    plain, tapped = model(x).outputs, model(x, tap=True).outputs
    for p, t in zip(plain, tapped, strict=True):
        assert torch.allclose(p, t)


def test_with_a_through_chain_the_tap_charges_the_target_for_its_whole_gradient(tiny: Problem) -> None:
    """GradNorm's G_a is the norm of the gradient of L_a on the last shared layer, whichever path it takes."""
    model = _model(tiny, Chain(source="c", target="a", mode="through"))
    split = tiny.load().train
    layer = model.last_shared_layer()
    plain_loss = tiny.task("a").loss(model(split.x).outputs[0], split.y["a"])
    gw, gb = torch.autograd.grad(plain_loss, [layer.weight, layer.bias])
    fwd = model(split.x, tap=True)
    tiny.task("a").loss(fwd.outputs[0], split.y["a"]).backward()
    assert fwd.tap is not None
    assert torch.count_nonzero(fwd.tap.layer_output_grads()[:, 2]) == 0  # nothing lands on the source's slice
    norms = per_task_grad_norms(fwd.tap)
    assert float(norms[0]) == pytest.approx(float(torch.cat([gw.flatten(), gb]).norm()), rel=1e-5)
