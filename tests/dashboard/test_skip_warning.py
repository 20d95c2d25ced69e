"""A run that skipped the browser tests (no Chromium outside CI) says so at its end, where nobody can miss it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = """
import pytest

@pytest.mark.browser
def test_in_the_browser():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")

@pytest.mark.browser
def test_also_in_the_browser():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")

def test_elsewhere():
    pytest.skip("another reason")
"""


def _run(tmp_path: Path, *args: str) -> str:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    (tmp_path / "test_some.py").write_text(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning",
         *args], cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_skipped_browser_tests_are_named_at_the_end_of_the_run(tmp_path: Path) -> None:
    out = _run(tmp_path)
    tail = out.splitlines()[-4:]
    assert "2 BROWSER TEST(S) SKIPPED: the dashboard was not tested" in tail[0]
    assert tail[1].strip() == "/usr/bin/chromium is missing (apt-get install chromium)"
    assert "pytest -m browser" in tail[2]
    assert "3 skipped" in tail[3]


def test_a_run_without_browser_skips_says_nothing(tmp_path: Path) -> None:
    out = _run(tmp_path, "-k", "elsewhere")
    assert "BROWSER" not in out
