"""``mtl-tune problems`` and ``--plugin``: plugin problems are listed with their tasks' declared directions and their
model knobs, broken plugins with their errors, and no plugin stops another problem or command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mtl_tune_cli._common import console
from mtl_tune_cli.main import app
from tests.plugins import BROKEN_IMPORT, NEEDS_DATA, TASKS_RAISE, WAVE

ROOT = Path(__file__).resolve().parents[2]
EVERY_PLUGIN = [arg for module in (WAVE, BROKEN_IMPORT, TASKS_RAISE, NEEDS_DATA) for arg in ("--plugin", module)]


def mtl(*args: str, monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.setattr(console, "width", 200)  # whole cells, not wrapped at 80 columns
    return CliRunner().invoke(app, list(args))


def row(output: str, name: str) -> str:
    """A problem's row: its cells' lines from the one naming it to the rule below it."""
    lines = output.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith(f"│ {name} ")]
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("│"))
    return "\n".join(lines[start:end])


def cells(block: str, column: int) -> list[str]:
    """One column's lines in a row."""
    return [line.split("│")[column + 1].strip() for line in block.splitlines() if line.split("│")[column + 1].strip()]


def test_problems_lists_plugins_broken_ones_included_without_loading_data(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = mtl(*EVERY_PLUGIN, "problems", monkeypatch=monkeypatch)
    assert out.exit_code == 0, out.output
    wave = row(out.stdout, "plugin-wave")
    assert cells(wave, 1) == ["sin (regression, r2_score, maximize)", "sign (classification, accuracy, minimize)"]
    assert cells(wave, 2) == ["width=8 [4..16]", "depth=1"]
    assert cells(row(out.stdout, "gradnorm-toy"), 1) == [
        "t0 (regression, mse, minimize)",
        "t1 (regression, mse, minimize)",
    ]
    assert "declared by the options" in row(out.stdout, "csv")
    assert "declared by the options" in row(out.stdout, "plugin-from-data")
    assert "failed to import: RuntimeError: this plugin cannot be imported" in row(out.stdout, BROKEN_IMPORT)
    assert "RuntimeError: tasks are not available today" in row(out.stdout, "plugin-moody")
    import mtl_tune_needs_data_plugin

    assert mtl_tune_needs_data_plugin.LOAD_CALLS == []


def test_a_broken_plugin_does_not_stop_training_another_problem(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", "--problem", "gradnorm-toy", "--device", "cpu", "--epochs", "1", "--json"]
    small = ["--option", "n_train=40", "--option", "n_val=20", "--model", "hidden=8", "--model", "depth=1"]
    out = mtl("--plugin", BROKEN_IMPORT, "--plugin", TASKS_RAISE, *args, *small, monkeypatch=monkeypatch)
    assert out.exit_code == 0, out.output
    assert set(json.loads(out.stdout)["tasks"]) == {"t0", "t1"}


def test_naming_a_broken_plugin_is_one_error_line(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = mtl("--plugin", TASKS_RAISE, "train", "--problem", "plugin-moody", monkeypatch=monkeypatch)
    assert out.exit_code == 2
    assert out.stderr.startswith("error: problem plugin 'plugin-moody' (module mtl_tune_tasks_raise_plugin) failed")
    assert "Traceback" not in out.output


def test_the_plugin_option_reaches_the_processes_a_command_starts(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = mtl("--plugin", WAVE, "problems", monkeypatch=monkeypatch)
    assert out.exit_code == 0 and "plugin-wave" in out.stdout
    assert os.environ["MTL_TUNE_PLUGINS"] == WAVE  # what `serve` and `study run` hand to their workers


def run(*args: str, plugins: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MTL_TUNE_PLUGINS"}
    environ.update(PYTHONPATH=os.pathsep.join([str(plugins), str(ROOT)]), COLUMNS="250", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "mtl_tune_cli.main", *args], env=environ, cwd=plugins, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip


def test_the_environment_variable_registers_a_module(plugin_dir: Path) -> None:
    done = run("problems", plugins=plugin_dir, env={"MTL_TUNE_PLUGINS": f"{WAVE},{BROKEN_IMPORT}"})
    assert done.returncode == 0, done.stderr
    assert "sign (classification, accuracy, minimize)" in cells(row(done.stdout, "plugin-wave"), 1)
    assert "cannot be imported" in row(done.stdout, BROKEN_IMPORT)


@pytest.mark.slow
def test_study_run_workers_load_the_plugin_named_on_the_command_line(plugin_dir: Path) -> None:
    url = f"sqlite:///{plugin_dir / 'studies.db'}"
    study = ["study", "run", "--problem", "plugin-wave", "--option", "n=40", "--trials", "2", "--epochs", "1"]
    done = run("--plugin", WAVE, *study, "--study", "wave", "--storage", url, "--sampler", "random", plugins=plugin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker(s) exited with an error" not in done.stdout
    import optuna

    trials = optuna.load_study(study_name="wave", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]


def test_problems_options_lists_what_option_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    out = mtl("problems", "--options", "multi-digits", monkeypatch=monkeypatch)
    assert out.exit_code == 0, out.output
    lines = [line for line in out.stdout.splitlines() if line.startswith("│")]
    assert [cells(line, 0)[0] for line in lines] == ["seed", "n_train", "n_val", "n_test"]
    assert cells(lines[1], 1) + cells(lines[1], 2) + cells(lines[1], 3) == ["int", "3000", ">= 10"]
    csv = mtl("problems", "--options", "csv", monkeypatch=monkeypatch).stdout
    assert re.search(r"│ data +│ path +│ required +│", csv)
    assert re.search(r"│ val_fraction +│ float +│ 0.2 +│ > 0.0, < 1.0 +│ share of the rows held out", csv)


def test_problems_options_of_a_plugin_and_of_names_it_cannot_list(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = mtl("--plugin", WAVE, "problems", "--options", "plugin-wave", monkeypatch=monkeypatch)
    assert out.exit_code == 0, out.output
    assert re.search(r"│ n +│ int +│ 64 +│", out.stdout)
    unknown = mtl("problems", "--options", "nope", monkeypatch=monkeypatch)
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: unknown problem 'nope'; available: csv, gradnorm-toy, multi-digits")
    broken = mtl("--plugin", BROKEN_IMPORT, "problems", "--options", BROKEN_IMPORT, monkeypatch=monkeypatch)
    assert broken.exit_code == 2 and "this plugin cannot be imported" in broken.stderr


def test_the_option_flags_help_names_the_command_that_lists_options(monkeypatch: pytest.MonkeyPatch) -> None:
    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"})
    assert "(repeatable; `mtl-tune problems --options PROBLEM` lists them)" in " ".join(out.stdout.split())
