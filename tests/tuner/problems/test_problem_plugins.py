"""Third-party problems: installed packages' ``mtl_tune.problems`` entry points and the operator's plugin modules.

A broken plugin is listed with its error and never stops another problem.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.plugins import BROKEN_IMPORT, NEEDS_DATA, TASKS_RAISE, WAVE
from tuner.config import TrainConfig
from tuner.problems import (
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    ProblemError,
    available_problems,
    broken_problems,
    create_problem,
    listing,
)
from tuner.train import train


def install(site: Path, entry_points: str) -> None:
    """A minimal installed distribution: a dist-info that declares the entry points (the modules are in ``site``)."""
    info = site / "mtl_tune_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtl-tune-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


def test_an_entry_point_problem_is_listed_created_and_trained(plugin_dir: Path) -> None:
    install(plugin_dir, f"plugin-wave = {WAVE}:Wave")
    assert "plugin-wave" in available_problems()
    problem = create_problem("plugin-wave", {"n": 40})
    assert problem.task_names == ["sin", "sign"]
    result = train(problem, TrainConfig(strategy="uncertainty", epochs=1, model={"width": 6}), device="cpu")
    assert set(result.final.tasks) == {"sin", "sign"}
    with pytest.raises(ProblemError, match="problem 'plugin-wave': n"):
        create_problem("plugin-wave", {"n": "many"})


def test_a_module_named_by_the_operator_registers_its_problems(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "plugin-wave" not in available_problems()
    monkeypatch.setenv(PLUGINS_ENV, f"{WAVE}")
    assert "plugin-wave" in available_problems()
    assert create_problem("plugin-wave").task_names == ["sin", "sign"]


def test_the_tasks_declare_their_directions(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, WAVE)
    tasks = {t.name: (t.metric_name, t.direction) for t in create_problem("plugin-wave").tasks}
    assert tasks == {"sin": ("r2_score", "maximize"), "sign": ("accuracy", "minimize")}


def test_without_the_plugin_it_is_unknown() -> None:
    assert "plugin-wave" not in available_problems()
    with pytest.raises(ProblemError, match=r"unknown problem 'plugin-wave'; available: .*gradnorm-toy"):
        create_problem("plugin-wave")


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        (f"odd = {WAVE}:WaveOptions", "not a tuner.problems.Problem subclass"),
        (f"gone = {WAVE}:Missing", "failed to load: AttributeError"),
        (f"boom = {BROKEN_IMPORT}:Anything", "failed to load: RuntimeError: this plugin cannot be imported"),
    ],
)
def test_a_broken_entry_point_is_listed_and_everything_else_works(
    plugin_dir: Path, entry_point: str, message: str
) -> None:
    install(plugin_dir, f"{entry_point}\nplugin-wave = {WAVE}:Wave")
    name = entry_point.split()[0]
    (broken,) = broken_problems()
    assert (broken.name, broken.source) == (name, f"entry point {entry_point.split(' = ')[1]}")
    assert message in broken.error
    assert {"gradnorm-toy", "csv", "plugin-wave"} <= set(available_problems())
    assert create_problem("gradnorm-toy", {"n_train": 20, "n_val": 10}).task_names == ["t0", "t1"]
    with pytest.raises(ProblemError, match=f"problem plugin '{name}' .* is broken: .*{message.split(':')[0]}"):
        create_problem(name)


def test_a_module_that_fails_to_import_is_listed_with_its_error(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PLUGINS_ENV, f"{BROKEN_IMPORT},{WAVE}")
    (broken,) = broken_problems()
    assert broken.name == BROKEN_IMPORT
    assert broken.error == "failed to import: RuntimeError: this plugin cannot be imported"
    assert "plugin-wave" in available_problems()


def test_a_name_already_taken_is_refused_and_the_first_problem_kept(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plugin_dir / "mtl_tune_imposter.py").write_text(
        f"from {WAVE} import Wave\n\n\nclass Imposter(Wave):\n    name = 'gradnorm-toy'\n"
    )
    monkeypatch.setenv(PLUGINS_ENV, "mtl_tune_imposter")
    try:
        (broken,) = broken_problems()
        assert broken.name == "gradnorm-toy" and "already taken by tuner.problems._toys.GradNormToy" in broken.error
        assert create_problem("gradnorm-toy").task_names == ["t0", "t1"]  # still the built-in
    finally:
        sys.modules.pop("mtl_tune_imposter", None)


def test_listing_marks_failing_tasks_broken_and_never_loads_data(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PLUGINS_ENV, os_separated(WAVE, TASKS_RAISE, NEEDS_DATA))
    found = listing()
    previews = {entry.cls.name: entry.preview for entry in found.problems}
    assert previews["plugin-from-data"] is None and previews["csv"] is None  # declared by the options
    assert previews["plugin-wave"] is not None and previews["gradnorm-toy"] is not None
    assert "plugin-moody" not in previews
    (moody,) = found.broken
    assert (moody.name, moody.source) == ("plugin-moody", f"module {TASKS_RAISE}")
    assert moody.error == "RuntimeError: tasks are not available today"
    import mtl_tune_needs_data_plugin

    assert mtl_tune_needs_data_plugin.LOAD_CALLS == []


def test_a_plugin_whose_tasks_fail_cannot_be_created(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, TASKS_RAISE)
    with pytest.raises(ProblemError, match=r"problem plugin 'plugin-moody' .*tasks are not available today"):
        create_problem("plugin-moody")


def os_separated(*modules: str) -> str:
    """``MTL_TUNE_PLUGINS`` takes ``os.pathsep`` as well as commas."""
    return os.pathsep.join(modules)
