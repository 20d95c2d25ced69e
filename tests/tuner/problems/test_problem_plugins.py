"""Third-party problems arrive through the ``mtl_tune.problems`` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli._common import console
from cli.main import app
from tuner.config import TrainConfig
from tuner.problems import ENTRY_POINT_GROUP, ProblemError, available_problems, create_problem
from tuner.train import train

PACKAGE = "mtl_tune_test_plugin"
PLUGIN = """
from __future__ import annotations

import torch

from tuner.problems import Dataset, Problem, ProblemOptions, Split, Task, mlp_trunk


class WaveOptions(ProblemOptions):
    n: int = 64


class Wave(Problem):
    name = "plugin-wave"
    description = "a plugin's problem"
    Options = WaveOptions

    @property
    def tasks(self):
        return [Task("sin", "regression"), Task("sign", "classification", out_dim=2)]

    def load(self):
        x = torch.linspace(-3, 3, self.options.n)[:, None]
        y = {"sin": torch.sin(x), "sign": (x[:, 0] > 0).long()}
        return Dataset(train=Split(x[::2], {k: v[::2] for k, v in y.items()}),
                       val=Split(x[1::2], {k: v[1::2] for k, v in y.items()}))

    def build_trunk(self, hidden, depth):
        return mlp_trunk(1, hidden, depth)


NotAProblem = object()
"""


def install(site: Path, entry_points: str) -> None:
    """A minimal installed distribution: the package and a dist-info that declares the entry points."""
    (site / PACKAGE).mkdir()
    (site / PACKAGE / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "mtl_tune_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtl-tune-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(PACKAGE, None)


def test_a_registered_problem_is_listed_created_and_trained(site: Path) -> None:
    install(site, f"wave = {PACKAGE}:Wave")
    assert "plugin-wave" in available_problems()
    problem = create_problem("plugin-wave", {"n": 40})
    assert problem.task_names == ["sin", "sign"]
    result = train(problem, TrainConfig(strategy="uncertainty", epochs=2), device="cpu")
    assert set(result.final.tasks) == {"sin", "sign"}
    with pytest.raises(ProblemError, match="problem 'plugin-wave': n"):
        create_problem("plugin-wave", {"n": "many"})


def test_mtl_tune_problems_lists_the_plugin_with_its_tasks(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, f"wave = {PACKAGE}:Wave")
    monkeypatch.setattr(console, "width", 200)  # a table row per problem, not wrapped at 80 columns
    out = CliRunner().invoke(app, ["problems"])
    assert out.exit_code == 0, out.output
    (row,) = [line for line in out.stdout.splitlines() if "plugin-wave" in line]
    assert "sin (regression, rmse)" in row and "sign (classification, accuracy)" in row
    assert "gradnorm-toy" in out.stdout and "csv" in out.stdout


def test_without_the_plugin_it_is_unknown() -> None:
    assert "plugin-wave" not in available_problems()
    with pytest.raises(ProblemError, match=r"unknown problem 'plugin-wave'; available: .*gradnorm-toy"):
        create_problem("plugin-wave")


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        (f"odd = {PACKAGE}:NotAProblem", "not a tuner.problems.Problem subclass"),
        (f"gone = {PACKAGE}:Missing", "failed to load"),
    ],
)
def test_a_broken_plugin_gives_an_error_naming_it(site: Path, entry_point: str, message: str) -> None:
    install(site, entry_point)
    with pytest.raises(ProblemError, match=f"problem plugin '{entry_point.split()[0]}'.*{message}"):
        available_problems()


def test_mtl_tune_problems_reports_a_broken_plugin_in_one_line(site: Path) -> None:
    install(site, f"odd = {PACKAGE}:NotAProblem")
    out = CliRunner().invoke(app, ["problems"])
    assert out.exit_code == 2
    assert out.stderr.startswith("error: problem plugin 'odd'")
    assert "Traceback" not in out.output
