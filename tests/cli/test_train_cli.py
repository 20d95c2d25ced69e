"""``mtl-tune train`` and ``mtl-tune problems``: JSON output, reproduction from a config file, readable errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from mtl_tune_cli.main import app

SMALL = ["train", "--problem", "uncertainty-toy", "--device", "cpu", "--epochs", "2"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def mtl(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def json_out(*args: str | Path) -> dict[str, Any]:
    result = mtl(*args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert isinstance(out, dict)
    return out


def error_line(result: Result) -> str:
    """The single ``error:`` line a refused command prints on stderr (and nothing else)."""
    lines = [ANSI.sub("", line) for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def test_json_output_has_the_documented_keys() -> None:
    out = json_out(*SMALL, "--strategy", "uncertainty")
    assert {"problem", "config", "tasks", "loss_weights", "objective", "sigma"} <= set(out)
    assert out["problem"] == "uncertainty-toy"
    assert set(out["tasks"]) == {"y1", "y2"}
    assert all(set(t) == {"val_loss", "metric"} for t in out["tasks"].values())
    assert set(out["loss_weights"]) == set(out["sigma"]) == {"y1", "y2"}
    assert out["series"] == {task: {"sigma": sigma} for task, sigma in out["sigma"].items()}
    assert out["config"]["strategy"] == "uncertainty" and out["config"]["epochs"] == 2
    assert isinstance(out["objective"], float)


def test_sigma_only_for_the_uncertainty_strategies() -> None:
    out = json_out(*SMALL, "--strategy", "gradnorm", "--alpha", "0.5")
    assert "sigma" not in out
    assert {task: set(series) for task, series in out["series"].items()} == {
        task: {"grad_norm", "grad_norm_target"} for task in ("y1", "y2")
    }
    assert "series" not in json_out(*SMALL, "--strategy", "equal")  # nothing besides the weights
    assert out["config"]["strategy_options"] == {"alpha": 0.5}
    assert sum(out["loss_weights"].values()) == pytest.approx(2.0, abs=1e-4)


def test_the_printed_config_reproduces_the_objective(tmp_path: Path) -> None:
    out = json_out(*SMALL, "--strategy", "static", "--weights", "y1=0.1,y2=2", "--lr-head", "y2=0.003", "--seed", "7")
    assert out["config"]["weights"] == {"y1": 0.1, "y2": 2.0}
    assert out["config"]["lr_head"] == {"y2": 0.003}
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(out))
    again = json_out("train", "--config", saved, "--device", "cpu")
    assert again["objective"] == out["objective"]
    assert again["config"] == out["config"]
    # A bare configuration (the "config" object alone) works too, with the problem named on the command line.
    (tmp_path / "bare.json").write_text(json.dumps(out["config"]))
    bare = json_out("train", "--config", tmp_path / "bare.json", "--problem", "uncertainty-toy", "--device", "cpu")
    assert bare["objective"] == out["objective"]
    # The command line overrides the file.
    assert json_out("train", "--config", saved, "--device", "cpu", "--seed", "8")["objective"] != out["objective"]


def test_the_table_output_names_every_task() -> None:
    result = mtl(*SMALL, "--strategy", "uncertainty")
    assert result.exit_code == 0, result.output
    assert "y1" in result.stdout and "y2" in result.stdout and "objective" in result.stdout


def _table(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["x1,x2,y,label", *rows]) + "\n")
    return path


def _csv_case(tmp_path: Path, case: str) -> tuple[list[str], str]:
    rows = [f"{i},{i % 3},{2 * i},{'ab'[i % 2]}" for i in range(20)]
    good = _table(tmp_path / "good.csv", rows)
    if case == "missing file":
        return ["--data", str(tmp_path / "nope.csv"), "--target", "y:regression"], "nope.csv"
    if case == "missing column":
        return ["--data", str(good), "--target", "price:regression"], "'price'"
    if case == "non-numeric regression target":
        bad = _table(tmp_path / "bad.csv", [*rows[:5], "1,2,three,a", *rows[5:]])
        return ["--data", str(bad), "--target", "y:regression", "--target", "label:classification"], "'y'"
    if case == "empty table":
        return ["--data", str(_table(tmp_path / "empty.csv", [])), "--target", "y:regression"], "empty"
    if case == "unknown kind":
        return ["--data", str(good), "--target", "y:ordinal"], "unknown kind 'ordinal'"
    if case == "single class":
        one = _table(tmp_path / "one.csv", [r[:-1] + "a" for r in rows])
        return ["--data", str(one), "--target", "label:classification"], "'label'"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["missing file", "missing column", "non-numeric regression target", "empty table", "unknown kind", "single class"],
)
def test_bad_csv_input_is_one_error_line_and_exit_code_2(tmp_path: Path, case: str) -> None:
    args, phrase = _csv_case(tmp_path, case)
    result = mtl("train", "--problem", "csv", "--device", "cpu", "--epochs", "1", *args)
    assert result.exit_code == 2
    line = error_line(result)
    assert "problem 'csv'" in line and phrase in line, line
    assert result.stdout == ""


def test_a_good_csv_trains_from_the_cli(tmp_path: Path) -> None:
    # A categorical feature (colours) and missing numbers train as they are.
    colours = ("red", "green", "blue")
    rows = [f"{'NA' if i % 6 == 1 else i / 10},{colours[i % 3]},{i / 5 + 1},{'ab'[int(i / 10 > 1)]}" for i in range(40)]
    data = _table(tmp_path / "t.csv", rows)
    out = json_out(
        "train", "--problem", "csv", "--data", data, "--target", "y:regression", "--target", "label:classification",
        "--device", "cpu", "--epochs", "3",
    )  # fmt: skip
    assert set(out["tasks"]) == {"y", "label"}
    assert out["problem_options"]["target"] == ["y:regression", "label:classification"]
    assert set(out["test"]) == {"y", "label"}  # the csv problem holds out a test split


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--strategy", "mystery"], "strategy: unknown 'mystery'"),
        (["--lr-head", "y3=0.1"], "lr_head: unknown task 'y3'"),
        (["--weights", "y1"], "--weights: expected TASK=VALUE"),
        (["--chain", "y1:y2:sideways"], "mode"),
        (["--chain", "y1:y9"], "unknown task 'y9'"),
        (["--device", "nonsense"], "device"),
        (["--tasks", "3"], "problem 'uncertainty-toy': tasks"),
        (["--lr-shared", "-1"], "lr_shared"),
    ],
)
def test_bad_options_are_one_error_line(args: list[str], phrase: str) -> None:
    result = mtl(*SMALL, *args)
    assert result.exit_code == 2
    assert phrase in error_line(result)


def test_unknown_problem_lists_the_available_ones() -> None:
    result = mtl("train", "--problem", "mnist")
    assert result.exit_code == 2
    assert "unknown problem 'mnist'; available: " in error_line(result)


def test_a_diverging_run_is_reported_not_raised() -> None:
    result = mtl(*SMALL, "--optimizer", "sgd", "--lr-shared", "1e12", "--lr-heads", "1e12")
    assert result.exit_code == 1
    assert "training diverged" in error_line(result)


def test_problems_lists_the_built_ins() -> None:
    result = mtl("problems")
    assert result.exit_code == 0
    for name in ("gradnorm-toy", "uncertainty-toy", "multi-digits", "csv"):
        assert name in result.stdout


def test_train_takes_problem_options_as_study_run_does() -> None:
    out = json_out(*SMALL, "--option", "n_train=30", "--option", "n_val=20")
    assert out["problem_options"] == {"n_train": 30, "n_val": 20}
    result = mtl(*SMALL, "--option", "n_trian=30")
    assert result.exit_code == 2
    assert "n_trian" in error_line(result)
