"""The recommender example: its stop-gradient chain, its masked dwell task and its declared parameter groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuner.config import Chain
from tuner.problems import ENTRY_POINT_GROUP, Masked, Problem, available_problems, check_groups

pytestmark = pytest.mark.usefixtures("installed")


def recsys() -> Problem:
    return available_problems()["recsys-demo"].create({"n_train": 256, "n_val": 64})


def test_pip_installed_the_entry_point(installed: Path) -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found["recsys-demo"].value == "recsys_demo:RecsysDemo"
    assert found["recsys-demo"].dist is not None and found["recsys-demo"].dist.name == "mtl-tune-recsys-demo"
    assert str(installed) in str(found["recsys-demo"].dist.locate_file("recsys_demo"))
    problem = recsys()
    assert [(t.name, t.kind, t.metric_name, t.direction) for t in problem.tasks] == [
        ("click", "binary", "auc", "maximize"),
        ("conversion", "binary", "auc", "maximize"),
        ("dwell", "regression", "rmse", "minimize"),
    ]
    assert problem.chains == (("click", "conversion"),)


def conversion_grads(problem: Problem, mode: str) -> tuple[float, float]:
    """|d conversion loss / d click tower| and |d conversion loss / d shared parameters| on one batch."""
    torch.manual_seed(0)
    model = problem.build_model(problem.knob_values({}), Chain(source="click", target="conversion", mode=mode))
    model.eval()  # no dropout: both modes see the same forward pass
    inputs, targets = problem.dataset().train.take(slice(0, 128))
    loss = problem.task("conversion").compute_loss(model(inputs)["conversion"], targets["conversion"])
    groups = problem.parameter_groups(model)
    grads = torch.autograd.grad(loss, [*groups.tasks["click"], *groups.shared], allow_unused=True)
    sizes = [g.abs().sum().item() if g is not None else 0.0 for g in grads]
    n_click = len(groups.tasks["click"])
    return sum(sizes[:n_click]), sum(sizes[n_click:])


def test_detach_chain_keeps_the_conversion_loss_off_the_click_tower() -> None:
    problem = recsys()
    click_detached, shared_detached = conversion_grads(problem, "detach")
    click_through, _ = conversion_grads(problem, "through")
    assert click_detached == 0.0
    assert click_through > 0.0  # the tower does receive that gradient when the chain lets it through
    assert shared_detached > 0.0  # only the chain's path is cut: the shared layers still learn from conversion


def test_dwell_is_defined_on_clicked_rows_only() -> None:
    train = recsys().dataset().train
    dwell, click = train.targets["dwell"], train.targets["click"]
    assert isinstance(dwell, Masked)
    assert torch.equal(dwell.mask, click.bool())
    assert 0 < int(dwell.mask.sum()) < len(click)


def test_parameter_groups_cover_the_model_and_gradnorm_uses_the_bottom() -> None:
    problem = recsys()
    model = problem.build_model(problem.knob_values({"embedding_dim": 8}), None)
    groups = problem.parameter_groups(model)
    check_groups(model, groups, problem.task_names)  # every parameter in exactly one group
    shared = {id(p) for p in groups.shared}
    assert all(id(p) in shared for p in problem.last_shared_layer(model).parameters())
    assert {id(p) for p in model.user.parameters()} <= shared


def test_data_depend_on_the_seed_only() -> None:
    cls = available_problems()["recsys-demo"]
    a, b, c = (cls.create({"n_train": 64, "n_val": 16, "seed": s}).load().train for s in (1, 1, 2))
    assert torch.equal(a.inputs["user"], b.inputs["user"])
    assert torch.equal(a.targets["click"], b.targets["click"])
    assert not torch.equal(a.inputs["user"], c.inputs["user"])
