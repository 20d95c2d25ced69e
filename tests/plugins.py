"""Problem plugins for the tests: a working one, and one for each way a plugin can break.

``write_plugins(directory)`` writes each as a module of its own; the directory goes on ``sys.path`` (in-process
tests) or ``PYTHONPATH`` (subprocesses), and the modules are named through ``--plugin`` or ``MTL_TUNE_PLUGINS``.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

WAVE = "mtl_tune_wave_plugin"
BROKEN_IMPORT = "mtl_tune_broken_import_plugin"
TASKS_RAISE = "mtl_tune_tasks_raise_plugin"
NEEDS_DATA = "mtl_tune_needs_data_plugin"

SOURCES = {
    # Its tasks declare directions no name would suggest: R2 (higher is better, from torchmetrics'
    # higher_is_better) and an accuracy the problem asks to minimise.
    WAVE: """
        from __future__ import annotations

        from typing import ClassVar

        import torch
        from torchmetrics.regression import R2Score

        from tuner.problems import Dataset, Knob, Problem, ProblemOptions, SharedBottom, Split, Task, mlp


        class WaveOptions(ProblemOptions):
            n: int = 64


        class Wave(Problem):
            name = "plugin-wave"
            description = "a plugin's problem"
            Options = WaveOptions
            model_knobs: ClassVar = {"width": Knob(8, low=4, high=16, help="shared width"), "depth": Knob(1)}

            @property
            def tasks(self):
                return [
                    Task("sin", "regression", metric=R2Score()),
                    Task("sign", "classification", out_dim=2, metric="accuracy", direction="minimize"),
                ]

            def load(self):
                x = torch.linspace(-3, 3, self.options.n)[:, None]
                y = {"sin": torch.sin(x), "sign": (x[:, 0] > 0).long()}
                return Dataset(
                    train=Split(x[::2], {k: v[::2] for k, v in y.items()}),
                    val=Split(x[1::2], {k: v[1::2] for k, v in y.items()}),
                )

            def build_model(self, knobs, chain):
                return SharedBottom(self.tasks, mlp(1, knobs["width"], knobs["depth"]), knobs["width"], chain)
    """,
    BROKEN_IMPORT: """
        raise RuntimeError("this plugin cannot be imported")
    """,
    TASKS_RAISE: """
        from tuner.problems import Problem


        class Moody(Problem):
            name = "plugin-moody"

            @property
            def tasks(self):
                raise RuntimeError("tasks are not available today")

            def load(self):
                raise AssertionError("never reached")

            def build_model(self, knobs, chain):
                raise AssertionError("never reached")
    """,
    # Its tasks come from its data, and its load() records every call: listing it must not call it.
    NEEDS_DATA: """
        from tuner.problems import Problem, Task

        LOAD_CALLS = []


        class FromData(Problem):
            name = "plugin-from-data"

            @property
            def tasks(self):
                return [Task(name, "regression") for name in self.dataset().train.targets]

            def load(self):
                LOAD_CALLS.append(self.options)
                raise RuntimeError("listing must not load the data")

            def build_model(self, knobs, chain):
                raise AssertionError("never reached")
    """,
}


def write_plugins(directory: Path) -> Path:
    """Every plugin as ``directory/<module>.py``; returns ``directory``."""
    for module, source in SOURCES.items():
        (directory / f"{module}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return directory


def forget_plugins() -> None:
    """Drop the plugin modules from ``sys.modules`` so the next test imports its own copies."""
    for module in SOURCES:
        sys.modules.pop(module, None)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin modules importable in this process, none of them named yet (``MTL_TUNE_PLUGINS`` is empty and is
    restored afterwards, also when a command under test adds to it)."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(write_plugins(directory)))
    monkeypatch.setenv("MTL_TUNE_PLUGINS", "")
    yield directory
    forget_plugins()
