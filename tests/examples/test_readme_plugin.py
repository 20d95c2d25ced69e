"""The plugin printed in the README's "Your own model" section runs as printed."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples.helpers import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_plugin() -> str:
    section = README.read_text().split("\n## Your own model\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the section shows no Python block"
    return match.group(1)


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "my_recsys.py").write_text(readme_plugin())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MTL_TUNE_PLUGINS", "")  # --plugin adds to it; restored after the test
    yield "my_recsys"
    sys.modules.pop("my_recsys", None)


def test_the_plugin_fits_in_sixty_lines() -> None:
    assert len(readme_plugin().splitlines()) <= 60


def test_the_plugin_trains_through_the_plugin_option(plugin_module: str) -> None:
    args = ["--strategy", "gradnorm", "--chain", "click:conversion:detach", "--epochs", "1", "--device", "cpu"]
    result = cli("--plugin", plugin_module, "train", "--problem", "my-recsys", *args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["tasks"]) == {"click", "conversion", "dwell"}
    assert all(0.0 <= out["tasks"][t]["metric"] <= 1.0 for t in ("click", "conversion"))
    assert out["tasks"]["dwell"]["metric"] > 0.0
    assert out["config"]["chain"]["mode"] == "detach"
