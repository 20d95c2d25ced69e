"""``mtl-tune db current`` and ``mtl-tune db upgrade``."""

from __future__ import annotations

from typer.testing import CliRunner

import storage
from mtl_tune_cli.main import app

runner = CliRunner()


def test_current_then_upgrade(empty_url: str) -> None:
    result = runner.invoke(app, ["db", "current", "--storage", empty_url])
    assert result.exit_code == 0, result.output
    assert "current: none" in result.stdout and "head: 0005" in result.stdout

    result = runner.invoke(app, ["db", "upgrade", "--storage", empty_url])
    assert result.exit_code == 0, result.output
    assert "from revision none to 0005" in result.stdout
    assert storage.current_revision(empty_url) == "0005"

    assert "already at revision 0005" in runner.invoke(app, ["db", "upgrade", "--storage", empty_url]).stdout
    assert "current: 0005" in runner.invoke(app, ["db", "current", "--storage", empty_url]).stdout


def test_upgrade_from_the_previous_revision(empty_url: str) -> None:
    storage.upgrade(empty_url, "0001")
    result = runner.invoke(app, ["db", "upgrade"], env={"MTL_TUNE_STORAGE": empty_url})
    assert result.exit_code == 0, result.output
    assert "from revision 0001 to 0005" in result.stdout


def test_errors_are_one_line_and_exit_2() -> None:
    for url in ("postgresql://postgres:secret@127.0.0.1:1/x", "not a url"):
        result = runner.invoke(app, ["db", "upgrade", "--storage", url])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.output and "secret" not in result.output
    storage.dispose_engines()
