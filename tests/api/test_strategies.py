"""``GET /api/strategies`` and ``mtl-tune strategies``: one listing of the strategies a space can search."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mtl_tune_cli.main import app as cli
from tuner.weighting import STRATEGIES


def test_every_strategy_is_listed_equal_first_with_its_knobs(sqlite_client: TestClient) -> None:
    listed = sqlite_client.get("/api/strategies").json()
    assert listed[0]["name"] == "equal"
    assert {s["name"] for s in listed} == set(STRATEGIES)
    by_name = {s["name"]: s for s in listed}
    for name, cls in STRATEGIES.items():
        assert set(by_name[name]["knobs"]) == set(cls.knobs)
        assert by_name[name]["description"]
    alpha = by_name["gradnorm"]["knobs"]["alpha"]
    assert (alpha["default"], alpha["low"], alpha["high"], alpha["log"]) == (1.5, 0.0, 3.0, False)
    assert by_name["gradnorm"]["needs_grad_norms"] and not by_name["equal"]["needs_grad_norms"]


def test_the_cli_lists_what_the_api_lists(sqlite_client: TestClient) -> None:
    result = CliRunner().invoke(cli, ["strategies", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == sqlite_client.get("/api/strategies").json()
    table = CliRunner().invoke(cli, ["strategies"], env={"COLUMNS": "200"})
    assert "temperature=2.0 [0.5..10 log]" in table.stdout and "alpha=1.5 [0..3]" in table.stdout
