"""The ``csv`` problem: the user's own table, real-world cells (categories, gaps), and every way it can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tuner.config import Chain, ConfigError, TrainConfig
from tuner.limits import LimitError
from tuner.problems import Masked, Problem, ProblemError, Split, create_problem
from tuner.problems._csv_columns import encode_feature
from tuner.problems._csv_table import Rows, read_table
from tuner.study import default_space
from tuner.train import build, resolve_config, train, train_step

EFFECT = {"Paris": 3.0, "Lyon": 1.0, "Nice": -1.0, "Lille": -3.0}


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


def write_survey(path: Path, n: int = 160) -> Path:
    """age (numeric, some NA/empty), city (categorical, some '?'); score = city effect + age slope (some empty),
    bought = yes/no by the sign of the score's signal, group = a/b by age (some empty or N/A labels)."""
    rng = np.random.default_rng(0)
    lines = ["age,city,score,bought,group"]
    for i in range(n):
        city, age = str(rng.choice(list(EFFECT))), float(rng.uniform(20, 70))
        signal = EFFECT[city] + 0.05 * (age - 45)
        cells = [
            ("NA" if i % 2 else "") if i % 7 == 3 else f"{age:.1f}",
            "?" if i % 11 == 5 else city,
            "" if i % 9 == 4 else f"{signal + rng.normal(scale=0.3):.3f}",
            "yes" if signal > 0 else "no",
            ("" if i % 2 else "N/A") if i % 13 == 6 else "ab"[age > 45],
        ]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(split: Split) -> set[tuple[float, ...]]:
    return {tuple(round(v, 4) for v in row) for row in split.inputs.tolist()}


def test_a_good_table_round_trips(tmp_path: Path) -> None:
    data = write_table(tmp_path / "shop.csv")
    problem = create_problem("csv", {"data": data, "target": ["price:regression", "churn:classification"]})
    assert [(t.name, t.kind, t.out_dim) for t in problem.tasks] == [
        ("price", "regression", 1),
        ("churn", "classification", 2),
    ]
    dataset = problem.load()
    assert isinstance(dataset.train, Split) and isinstance(dataset.val, Split) and isinstance(dataset.test, Split)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (72, 24, 24)
    assert dataset.val.targets["churn"].dtype == torch.long
    # Standardised with the training rows' statistics.
    assert torch.allclose(dataset.train.inputs.mean(dim=0), torch.zeros(2), atol=1e-5)
    price = dataset.train.targets["price"]
    assert isinstance(price, torch.Tensor) and float(price.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    result = train(problem, TrainConfig(epochs=30), device="cpu")
    final = result.final.tasks
    # The price RMSE is reported in the column's own units: well below its spread (about 11), near the noise.
    assert final["price"].metric < 4.0
    assert final["churn"].metric > 0.8
    assert result.test is not None and result.test["price"]["metric"] < 4.0


def test_the_test_split_is_held_out_and_optional(tmp_path: Path) -> None:
    data = write_table(tmp_path / "shop.csv", n=100)
    split = create_problem("csv", {"data": data, "target": "price:regression", "test_fraction": 0.3}).load()
    assert split.test is not None and len(split.test) == 30
    train_rows, val_rows, test_rows = _rows(split.train), _rows(split.val), _rows(split.test)
    assert len(train_rows) + len(val_rows) + len(test_rows) == 100
    assert not (train_rows & test_rows) and not (val_rows & test_rows) and not (train_rows & val_rows)
    none = create_problem("csv", {"data": data, "target": "price:regression", "test_fraction": 0}).load()
    assert none.test is None and len(none.train) + len(none.val) == 100
    with pytest.raises(ProblemError, match="val_fraction \\+ test_fraction"):
        create_problem("csv", {"data": data, "target": "price:regression", "val_fraction": 0.5, "test_fraction": 0.5})


def test_the_same_seed_gives_the_same_split(tmp_path: Path) -> None:
    data = write_table(tmp_path / "shop.csv")
    options = {"data": data, "target": "price:regression", "features": ["x1", "x2"]}
    a, b = create_problem("csv", options).load(), create_problem("csv", options).load()
    assert torch.equal(a.val.inputs, b.val.inputs)
    other = create_problem("csv", {**options, "seed": 1}).load()
    assert not torch.equal(a.val.inputs, other.val.inputs)


def test_categorical_and_missing_features_train_end_to_end(tmp_path: Path) -> None:
    data = write_survey(tmp_path / "survey.csv")
    problem = create_problem("csv", {"data": data, "target": "score:regression", "features": ["age", "city"]})
    notes = "\n".join(problem.notes)
    assert "column 'age': 23 missing values imputed with the training mean" in notes
    assert "missing-indicator column added" in notes
    # Four cities and the '?' cells' own category.
    assert "column 'city': detected categorical: 'Lille' in data row 1 is not a number" in notes
    assert "5 categories one-hot" in notes
    assert "15 missing values as the category '(missing)'" in notes
    x = problem.load().train.inputs
    assert x.shape[1] == 2 + 5
    assert torch.equal(x[:, 2:].sum(dim=1), torch.ones(len(x)))  # one category each (none is 'other' here)
    result = train(problem, TrainConfig(epochs=40), device="cpu")
    # The score spreads over about 2.3, mostly by city: age alone leaves an RMSE near that; the cities bring it down.
    assert result.final.tasks["score"].metric < 1.2


def test_imputation_and_scaling_use_the_training_rows_only(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("age\n10\n20\nNA\n30\n1000\nN/A\n40\nnull\n")
    table = read_table(tmp_path / "t.csv")
    rows = Rows(train=np.array([0, 1, 2, 3]), val=np.array([4, 5]), test=np.array([6, 7]))
    encoded = encode_feature(table, "age", rows, categorical=False, max_categories=5)
    std = float(np.std([10, 20, 30]))
    expected_age = [-10 / std, 0, 0, 10 / std, 980 / std, 0, 20 / std, 0]
    assert encoded.block[:, 0] == pytest.approx(expected_age)
    assert encoded.block[:, 1].tolist() == [0, 0, 1, 0, 0, 1, 0, 1]
    assert encoded.note is not None and "3 missing values" in encoded.note and "(20)" in encoded.note


def test_categories_are_capped_and_unseen_ones_are_other(tmp_path: Path) -> None:
    codes = ["75001", "75001", "75001", "69001", "69001", "06000", "59000", "13001"]
    (tmp_path / "t.csv").write_text("zip\n" + "\n".join(codes) + "\n")
    table = read_table(tmp_path / "t.csv")
    rows = Rows(train=np.arange(7), val=np.array([7]), test=np.array([], dtype=int))
    # Numbers, but declared categorical; two columns kept: the most frequent training values.
    encoded = encode_feature(table, "zip", rows, categorical=True, max_categories=2)
    assert encoded.width == 2
    assert encoded.block.tolist() == [[1, 0]] * 3 + [[0, 1]] * 2 + [[0, 0]] * 3
    assert encoded.note is not None
    assert "declared categorical" in encoded.note and "2 rarer ones as 'other'" in encoded.note
    assert "1 values no training row has as 'other'" in encoded.note
    problem = create_problem(
        "csv", {"data": write_survey(tmp_path / "s.csv"), "target": "score:regression", "categorical": "age"}
    )
    assert any("column 'age': declared categorical; 20 categories one-hot" in n for n in problem.notes)


def test_a_missing_target_drops_the_row_for_that_task_only(tmp_path: Path) -> None:
    data = write_survey(tmp_path / "survey.csv")
    problem = create_problem("csv", {"data": data, "target": ["score:regression", "bought:binary"]})
    split = problem.load().train
    assert isinstance(split, Split)
    score, bought = split.targets["score"], split.targets["bought"]
    assert isinstance(score, Masked) and isinstance(bought, torch.Tensor)
    missing = ~score.mask
    assert 0 < int(missing.sum()) < len(split)
    assert int(problem.task("score").count(score)) == len(split) - int(missing.sum())
    assert int(problem.task("bought").count(bought)) == len(split)
    assert any("column 'score': 18 rows have no target value" in n for n in problem.notes)
    # A batch of only the rows without a score: the score task adds nothing, the bought task learns from them.
    run = build(problem, resolve_config(problem, TrainConfig()), torch.device("cpu"))
    inputs, targets = split.take(missing.nonzero()[:, 0])
    losses = train_step(run, inputs, targets)
    assert float(losses[0]) == 0.0 and float(losses[1]) > 0.0
    assert _head_gradient(run.model, "score") == 0.0
    assert _head_gradient(run.model, "bought") > 0.0


def test_binary_targets_report_auc_or_balanced_accuracy(tmp_path: Path) -> None:
    data = write_table(tmp_path / "shop.csv")
    n_yes = data.read_text().count(",yes")
    for spec, metric in (("churn:binary", "auc"), ("churn:binary:balanced_accuracy", "balanced_accuracy")):
        problem = create_problem("csv", {"data": data, "target": spec})
        task = problem.task("churn")
        assert (task.kind, task.out_dim, task.metric_name, task.direction) == ("binary", 1, metric, "maximize")
        assert "column 'churn': binary target, positive class 'yes'" in problem.notes
        dataset = problem.load()
        assert dataset.test is not None
        flags = [s.targets["churn"] for s in (dataset.train, dataset.val, dataset.test) if isinstance(s, Split)]
        assert sum(float(f.sum()) for f in flags if isinstance(f, torch.Tensor)) == n_yes
        value = train(problem, TrainConfig(epochs=20), device="cpu").final.tasks["churn"].metric
        assert 0.8 < value <= 1.0


@pytest.mark.parametrize(
    ("values", "positive"),
    [(("0", "1"), "1"), (("no", "Yes"), "Yes"), (("2", "10"), "10"), (("male", "female"), "male")],
)
def test_the_positive_class_follows_the_documented_rule(tmp_path: Path, values: tuple[str, str], positive: str) -> None:
    rows = [f"{i},{values[i % 2]}" for i in range(20)]
    (tmp_path / "t.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    problem = create_problem("csv", {"data": tmp_path / "t.csv", "target": "y:binary", "test_fraction": 0})
    assert f"column 'y': binary target, positive class {positive!r}" in problem.notes


def test_an_empty_class_label_is_missing_not_a_class(tmp_path: Path) -> None:
    data = write_survey(tmp_path / "survey.csv")
    problem = create_problem("csv", {"data": data, "target": ["group:classification", "bought:binary"]})
    assert problem.task("group").out_dim == 2  # 'a' and 'b'; the empty and N/A cells are no class
    dataset = problem.load()
    splits = [s for s in (dataset.train, dataset.val, dataset.test) if isinstance(s, Split)]
    masks = [s.targets["group"] for s in splits]
    assert len(masks) == 3 and all(isinstance(m, Masked) for m in masks)
    missing = sum(int((~m.mask).sum()) for m in masks if isinstance(m, Masked))
    assert missing == sum(1 for i in range(160) if i % 13 == 6)
    result = train(problem, TrainConfig(epochs=20), device="cpu")
    assert result.final.tasks["group"].metric > 0.8  # age decides the group


def test_a_declared_chain_is_searched_and_trains(tmp_path: Path) -> None:
    data = write_survey(tmp_path / "survey.csv")
    options = {"data": data, "target": ["bought:binary", "score:regression"]}
    plain = create_problem("csv", options)
    assert plain.chains == ()
    with pytest.raises(ConfigError, match="offers none"):
        resolve_config(plain, TrainConfig(chain=Chain(source="bought", target="score")))
    problem = create_problem("csv", {**options, "chain": "bought:score"})
    assert problem.chains == (("bought", "score"),)
    assert default_space(problem).chain is not None  # a study searches the chain's mode
    resolve_config(problem, TrainConfig(chain=Chain(source="bought", target="score", mode="through")))
    with pytest.raises(ConfigError, match="does not support score:bought; it offers bought:score"):
        resolve_config(problem, TrainConfig(chain=Chain(source="score", target="bought")))
    assert _source_head_gradient(problem, "detach") == 0.0
    assert _source_head_gradient(problem, "through") > 0.0
    result = train(problem, TrainConfig(epochs=3, chain=Chain(source="bought", target="score")), device="cpu")
    assert np.isfinite(result.objective)


def _source_head_gradient(problem: Problem, mode: str) -> float:
    """How much the target's loss alone moves the source's head."""
    chain = Chain.model_validate({"source": "bought", "target": "score", "mode": mode})
    torch.manual_seed(0)
    model = problem.build_model(problem.knob_values(None), chain)
    split = problem.load().train
    assert isinstance(split, Split)
    problem.task("score").compute_loss(model(split.inputs)["score"], split.targets["score"]).backward()
    return _head_gradient(model, "bought")


def _head_gradient(model: torch.nn.Module, task: str) -> float:
    heads = model.get_submodule("heads")
    return sum(float(p.grad.abs().sum()) for p in heads.get_submodule(task).parameters() if p.grad is not None)


def _bad(tmp_path: Path, case: str) -> tuple[dict[str, object], tuple[str, ...]]:
    """Options for one kind of bad input and the phrases its error must contain."""
    good = write_table(tmp_path / "good.csv")
    if case == "missing file":
        return {"data": tmp_path / "absent.csv", "target": ["price:regression"]}, ("absent.csv", "not found")
    if case == "missing column":
        return {"data": good, "target": ["cost:regression"]}, ("'cost'", "not found", "good.csv")
    if case == "non-numeric regression target":
        text = good.read_text().splitlines()
        text[5] = ",".join([*text[5].split(",")[:2], "cheap", "yes"])
        (tmp_path / "cheap.csv").write_text("\n".join(text) + "\n")
        phrases = ("'price'", "cheap.csv", "not numeric", "'cheap'", "data row 5", "classification")
        return {"data": tmp_path / "cheap.csv", "target": ["price:regression", "churn:classification"]}, phrases
    if case == "infinite feature":
        lines = good.read_text().splitlines()
        lines[3] = "inf," + lines[3].split(",", 1)[1]
        (tmp_path / "inf.csv").write_text("\n".join(lines) + "\n")
        return {"data": tmp_path / "inf.csv", "target": ["price:regression"]}, ("'x1'", "inf.csv", "infinite")
    if case == "empty table":
        (tmp_path / "empty.csv").write_text("x1,x2,price\n")
        return {"data": tmp_path / "empty.csv", "target": ["price:regression"]}, ("empty.csv", "empty")
    if case == "unknown kind":
        return {"data": good, "target": ["price:ordinal"]}, ("'price'", "unknown kind 'ordinal'")
    if case == "unsuited metric":
        return {"data": good, "target": ["price:regression:auc"]}, ("'price'", "metric 'auc'", "rmse")
    if case == "single class":
        (tmp_path / "one.csv").write_text(good.read_text().replace(",yes", ",no"))
        return {"data": tmp_path / "one.csv", "target": ["churn:classification"]}, ("'churn'", "single class")
    if case == "binary with three values":
        text = good.read_text().replace(",yes\n", ",maybe\n", 3)
        (tmp_path / "three.csv").write_text(text)
        return {"data": tmp_path / "three.csv", "target": ["churn:binary"]}, ("'churn'", "three.csv", "3 distinct")
    if case == "target never given in training":
        lines = good.read_text().splitlines()
        (tmp_path / "gone.csv").write_text("\n".join([lines[0], *(ln.rsplit(",", 1)[0] + ",NA" for ln in lines[1:])]))
        return {"data": tmp_path / "gone.csv", "target": ["churn:binary"]}, ("'churn'", "gone.csv", "no value")
    if case == "duplicate column":
        (tmp_path / "twice.csv").write_text(good.read_text().replace("x2,", "x1,", 1))
        return {"data": tmp_path / "twice.csv", "target": ["price:regression"]}, ("'x1'", "twice.csv", "twice")
    if case == "target as feature":
        options = {"data": good, "target": ["price:regression"], "features": ["x1", "price"]}
        return options, ("'price'", "good.csv", "is a target")
    if case == "unknown categorical":
        options = {"data": good, "target": ["price:regression"], "categorical": ["town"]}
        return options, ("'town'", "good.csv", "not found")
    if case == "chain to a feature":
        options = {"data": good, "target": ["price:regression", "churn:binary"], "chain": "churn:x1"}
        return options, ("chain", "'x1'", "not a target")
    raise AssertionError(case)


BAD = [
    "missing file",
    "missing column",
    "non-numeric regression target",
    "infinite feature",
    "empty table",
    "unknown kind",
    "unsuited metric",
    "single class",
    "binary with three values",
    "target never given in training",
    "duplicate column",
    "target as feature",
    "unknown categorical",
    "chain to a feature",
]


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


@pytest.mark.parametrize(
    ("limit", "value", "phrase"),
    [
        ("MTL_TUNE_MAX_CSV_COLUMNS", "3", "columns: 4 exceeds the maximum of 3"),
        ("MTL_TUNE_MAX_SAMPLES", "50", "data rows: 51 exceeds the maximum of 50"),
        ("MTL_TUNE_MAX_CSV_CELLS", "100", "cells (rows x columns): 104 exceeds the maximum of 100"),
    ],
)
def test_a_table_over_the_operators_limits_is_refused_while_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str, value: str, phrase: str
) -> None:
    good = write_table(tmp_path / "good.csv")
    monkeypatch.setenv(limit, value)
    with pytest.raises(LimitError) as info:
        create_problem("csv", {"data": good, "target": ["price:regression"]}).tasks  # noqa: B018
    assert info.value.loc == ("problem_options", "data")
    assert phrase in str(info.value) and "good.csv" in str(info.value) and limit in str(info.value)


def test_a_row_with_another_number_of_fields_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("x,y\n1,2\n\n3,4,5\n")
    with pytest.raises(ProblemError, match=r"ragged\.csv line 4 has 3 fields, the header has 2"):
        read_table(path)


def test_one_hot_inputs_over_the_cell_limit_are_refused_before_they_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    survey = write_survey(tmp_path / "survey.csv")  # 160 rows x 5 columns; age as 2 inputs, city one-hot
    options = {"data": survey, "target": ["score:regression"], "features": ["age", "city"]}
    monkeypatch.setenv("MTL_TUNE_MAX_CSV_CELLS", "900")
    with pytest.raises(LimitError, match="column 'city' would bring the model's inputs") as info:
        create_problem("csv", options).tasks  # noqa: B018
    assert info.value.loc == ("problem_options", "data")
    assert "MTL_TUNE_MAX_CSV_CELLS" in str(info.value) and "max_categories" in str(info.value)
    assert create_problem("csv", {**options, "max_categories": 2}).tasks  # 160 x (2 + 2) inputs fit
