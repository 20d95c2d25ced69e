"""The example plugins, installed by pip as a user would, into a directory of their own.

pip builds each example's wheel and installs it (package and dist-info with its entry points) under a temporary
``site``; a test puts that directory on ``sys.path`` (and on ``PYTHONPATH`` for the workers it starts).
The shared virtual environment is left as it was, so no other test sees the examples' problems.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLUGINS = {"recsys": "recsys_demo", "segdepth": "segdepth_demo"}


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both examples installed by ``pip install --no-deps`` (built from copies: the source tree stays clean)."""
    root = tmp_path_factory.mktemp("plugins")
    sources = []
    for example in PLUGINS:
        source = root / "src" / example
        shutil.copytree(EXAMPLES / example, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
        sources.append(str(source))
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*pip, "--target", str(target), *sources], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The examples importable in this process for one test, and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in list(sys.modules):
        if name.split(".")[0] in PLUGINS.values():
            del sys.modules[name]
