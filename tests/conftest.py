"""Fixtures for every test: training runs on one thread. At the end of a run, skipped browser tests are said loudly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The models in the tests are tiny: one thread is faster than two and keeps runs reproducible.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file, and a fresh PostgreSQL database dropped afterwards."""
    import storage
    from tests.pg import fresh_database

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'storage.db'}"
        storage.dispose_engines()
    else:
        with fresh_database() as url:
            yield url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Outside CI a missing Chromium skips the dashboard's browser tests (CI fails instead): a green run must not hide
    that the dashboard was never opened in a browser."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "browser" in getattr(r, "keywords", {})]
    if not skipped:
        return
    reasons = sorted({_reason(r) for r in skipped})
    terminalreporter.write_sep("!", f"{len(skipped)} BROWSER TEST(S) SKIPPED: the dashboard was not tested", red=True)
    for reason in reasons:
        terminalreporter.write_line(f"  {reason}", red=True, bold=True)
    terminalreporter.write_line(
        "  with Chromium installed: pytest -m browser (with CI=true a missing one fails them)", red=True
    )


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")
