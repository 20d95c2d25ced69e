"""What a first look at ``mtl-tune`` meets: --version, whole study names, flags shown as flags, quiet logs, an ETA."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer.main
from rich.console import Console
from typer.testing import CliRunner

from mtl_tune_cli import _common
from mtl_tune_cli.main import app

LONG_NAME = "a-rather-long-study-name-that-must-survive"
TINY_RUN = (
    "study", "run", "--problem", "uncertainty-toy", "--trials", "2", "--epochs", "1", "--option", "n_train=50",
    "--sampler", "random", "--pruner", "none",
)  # fmt: skip


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout


def test_version_prints_the_installed_version() -> None:
    out = cli("--version")
    assert out.strip() == f"mtl-tune {version('mtl-tune')}"


@pytest.mark.parametrize("terminal", [True, False])
def test_study_list_never_cuts_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    url = f"sqlite:///{tmp_path / 'list.db'}"
    cli(*TINY_RUN, "--study", LONG_NAME, "--storage", url, "--detach")
    monkeypatch.setenv("COLUMNS", "60")
    if terminal:  # a 60-column terminal; otherwise piped output
        monkeypatch.setattr(_common, "console", Console(force_terminal=True, width=60))
    out = cli("study", "list", "--storage", url)
    assert LONG_NAME in out
    assert "…" not in out.split(LONG_NAME)[1].splitlines()[0]  # the row's other cells are wrapped, not dropped


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(command, "commands", {})
    return [path, *(p for name, sub in subs.items() for p in _commands(sub, (*path, name)))]


def test_every_help_shows_flags_without_a_value() -> None:
    paths = _commands(typer.main.get_command(app))
    assert ("study", "best") in paths and ("worker",) in paths
    for path in paths:
        out = cli(*path, "--help")
        assert "--help" in out
        for bad in ("<bool>", "BOOLEAN", "<boolean>"):
            assert bad not in out, (path, out)


def _run(tmp_path: Path, *global_options: str) -> str:
    """A tiny study in a process of its own: Optuna's log handler writes to the real stderr."""
    url = f"sqlite:///{tmp_path / 'run.db'}"
    cmd = [sys.executable, "-m", "mtl_tune_cli.main", *global_options, *TINY_RUN, "--study", "s", "--storage", url]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=True)
    return done.stdout + done.stderr


def test_study_run_keeps_library_info_logs_out_and_shows_an_eta(tmp_path: Path) -> None:
    out = _run(tmp_path)
    assert "A new study created" not in out and "alembic" not in out
    assert "eta 0:00:00" in out  # the progress bar's last state: nothing remaining
    assert "created in" in out  # mtl-tune's own line stays


def test_verbose_shows_library_info_logs(tmp_path: Path) -> None:
    out = _run(tmp_path, "--verbose")
    assert "A new study created in RDB with name: s" in out
    assert "[alembic.runtime.migration]" in out
