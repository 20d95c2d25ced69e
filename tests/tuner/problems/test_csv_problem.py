"""The ``csv`` problem: the user's own table, and every way it can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tuner.config import TrainConfig
from tuner.problems import ProblemError, create_problem
from tuner.train import train


def write_table(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Features x1, x2; price = 50 + 10 x1 - 5 x2 (+ noise); churn = yes/no by the sign of x1 + x2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    price = 50 + 10 * x[:, 0] - 5 * x[:, 1] + rng.normal(scale=0.5, size=n)
    churn = np.where(x.sum(axis=1) > 0, "yes", "no")
    lines = ["x1,x2,price,churn"] + [
        f"{a:.4f},{b:.4f},{p:.3f},{c}" for (a, b), p, c in zip(x, price, churn, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_good_table_round_trips(tmp_path: Path) -> None:
    data = write_table(tmp_path / "shop.csv")
    problem = create_problem("csv", {"data": data, "target": ["price:regression", "churn:classification"]})
    assert [(t.name, t.kind, t.out_dim) for t in problem.tasks] == [
        ("price", "regression", 1),
        ("churn", "classification", 2),
    ]
    dataset = problem.load()
    assert dataset.train.x.shape == (96, 2) and dataset.val.x.shape == (24, 2)
    assert dataset.val.y["churn"].dtype == torch.long
    # Standardised with the training rows' statistics.
    assert torch.allclose(dataset.train.x.mean(dim=0), torch.zeros(2), atol=1e-5)
    assert float(dataset.train.y["price"].std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    result = train(problem, TrainConfig(epochs=30), device="cpu")
    price, churn = result.final.tasks["price"], result.final.tasks["churn"]
    # The price RMSE is reported in the column's own units: well below its spread (about 11), near the noise.
    assert price.metric < 4.0
    assert churn.metric > 0.8


def test_the_same_seed_gives_the_same_split(tmp_path: Path) -> None:
    data = write_table(tmp_path / "shop.csv")
    options = {"data": data, "target": "price:regression", "features": ["x1", "x2"]}
    a, b = create_problem("csv", options).load(), create_problem("csv", options).load()
    assert torch.equal(a.val.x, b.val.x)
    other = create_problem("csv", {**options, "seed": 1}).load()
    assert not torch.equal(a.val.x, other.val.x)


def _bad(tmp_path: Path, case: str) -> tuple[dict[str, object], tuple[str, ...]]:
    """Options for one kind of bad input and the phrases its error must contain."""
    good = write_table(tmp_path / "good.csv")
    if case == "missing file":
        return {"data": tmp_path / "absent.csv", "target": ["price:regression"]}, ("absent.csv", "not found")
    if case == "missing column":
        return {"data": good, "target": ["cost:regression"]}, ("'cost'", "not found")
    if case == "non-numeric feature":
        text = good.read_text().replace("x1,", "city,", 1).splitlines()
        text[5] = "Paris," + text[5].split(",", 1)[1]
        (tmp_path / "city.csv").write_text("\n".join(text) + "\n")
        phrases = ("'city'", "not numeric", "'Paris'", "data row 5")
        return {"data": tmp_path / "city.csv", "target": ["price:regression", "churn:classification"]}, phrases
    if case == "empty table":
        (tmp_path / "empty.csv").write_text("x1,x2,price\n")
        return {"data": tmp_path / "empty.csv", "target": ["price:regression"]}, ("empty.csv", "empty")
    if case == "unknown kind":
        return {"data": good, "target": ["price:ordinal"]}, ("'price'", "unknown kind 'ordinal'")
    if case == "single class":
        (tmp_path / "one.csv").write_text(good.read_text().replace(",yes", ",no"))
        return {"data": tmp_path / "one.csv", "target": ["churn:classification"]}, ("'churn'", "single class")
    raise AssertionError(case)


BAD = ["missing file", "missing column", "non-numeric feature", "empty table", "unknown kind", "single class"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_names_the_problem_and_the_column(tmp_path: Path, case: str) -> None:
    options, phrases = _bad(tmp_path, case)
    with pytest.raises(ProblemError) as info:
        problem = create_problem("csv", options)
        train(problem, TrainConfig(epochs=1), device="cpu")
    message = str(info.value)
    assert message.startswith("problem 'csv': ")
    for phrase in phrases:
        assert phrase in message, message


def test_a_target_is_required() -> None:
    with pytest.raises(ProblemError, match="problem 'csv': target"):
        create_problem("csv", {"data": "x.csv"})
