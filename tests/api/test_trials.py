"""Reading finished studies: detail, trial pages, history, one trial's curves, importances, Pareto sets."""

from __future__ import annotations

import math
import time

import optuna
import pytest
from fastapi.testclient import TestClient

import storage
from tests.api.conftest import Seeded

ROW_KEYS = {"number", "state", "values", "objective", "params", "tasks", "duration_s", "started_at", "finished_at",
            "baseline"}  # fmt: skip


def _study(seeded: Seeded, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage.optuna_storage(seeded.url))


def test_detail_has_best_baseline_and_comparison(seeded_client: TestClient, seeded: Seeded) -> None:
    study = seeded_client.get("/api/studies/scalar").json()
    reference = _study(seeded, "scalar")

    assert study["status"] == "completed"
    assert study["trials"] == {"complete": 7, "pruned": 0, "failed": 0, "running": 0, "interrupted": 0}
    assert study["best_value"] == pytest.approx(reference.best_value)
    assert [t["number"] for t in study["best"]] == [reference.best_trial.number]
    assert set(study["best"][0]) == ROW_KEYS
    baseline = study["baseline"]
    assert baseline["number"] == 0 and baseline["baseline"] and baseline["params"] == {}
    for task in ("y1", "y2"):
        change = study["comparison"][task]
        assert change["metric"] == "rmse"
        assert change["baseline"] == pytest.approx(baseline["tasks"][task]["metric"])
        assert change["best"] == pytest.approx(study["best"][0]["tasks"][task]["metric"])
        assert change["change"] == pytest.approx((change["best"] - change["baseline"]) / abs(change["baseline"]))


def test_pareto_detail_holds_the_pareto_set(seeded_client: TestClient, seeded: Seeded) -> None:
    study = seeded_client.get("/api/studies/pareto").json()

    expected = sorted(t.number for t in _study(seeded, "pareto").best_trials)
    assert sorted(t["number"] for t in study["best"]) == expected
    assert study["best_value"] is None
    assert study["comparison"] == {}
    assert study["baseline"]["number"] == 0


def test_list_shows_counts_and_best_values(seeded_client: TestClient, seeded: Seeded) -> None:
    studies = {s["name"]: s for s in seeded_client.get("/api/studies").json()["studies"]}
    assert studies["scalar"]["best_value"] == pytest.approx(_study(seeded, "scalar").best_value)
    assert studies["pareto"]["best_value"] is None
    assert studies["pareto"]["trials"]["complete"] == 6


def test_trial_pages(seeded_client: TestClient, seeded: Seeded) -> None:
    first = seeded_client.get("/api/studies/scalar/trials", params={"limit": 3}).json()
    second = seeded_client.get("/api/studies/scalar/trials", params={"limit": 3, "offset": 3}).json()

    assert (first["total"], first["limit"], first["offset"]) == (7, 3, 0)
    assert [t["number"] for t in first["items"] + second["items"]] == list(range(6))
    row = first["items"][1]
    assert set(row) == ROW_KEYS
    reference = _study(seeded, "scalar").trials[1]
    assert row["params"] == pytest.approx(reference.params)
    assert row["values"] == pytest.approx(reference.values)
    assert row["objective"] == pytest.approx(reference.values[0])
    assert set(row["tasks"]) == {"y1", "y2"}
    assert set(row["tasks"]["y1"]) == {"val_loss", "metric", "weight", "sigma", "series"}
    assert row["tasks"]["y1"]["sigma"] == row["tasks"]["y1"]["series"].get("sigma")
    assert row["duration_s"] > 0 and row["started_at"] < row["finished_at"]
    assert first["items"][0]["baseline"] and not row["baseline"]


@pytest.mark.parametrize("order", ["number", "-number", "objective", "-objective", "duration_s", "-duration_s"])
def test_trial_orders(seeded_client: TestClient, order: str) -> None:
    items = seeded_client.get("/api/studies/scalar/trials", params={"order": order}).json()["items"]
    key = order.lstrip("-")
    keys = [t[key] for t in items]
    assert len(keys) == 7
    assert keys == sorted(keys, reverse=order.startswith("-"))


def test_state_filter(seeded_client: TestClient) -> None:
    complete = seeded_client.get("/api/studies/scalar/trials", params={"state": "complete"}).json()
    pruned = seeded_client.get("/api/studies/scalar/trials", params={"state": "pruned"}).json()
    assert complete["total"] == 7 and pruned == {"total": 0, "limit": 50, "offset": 0, "items": []}


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"order": "params"}, {"state": "running"}]
)
def test_bad_page_parameters_are_422(seeded_client: TestClient, params: dict[str, object]) -> None:
    assert seeded_client.get("/api/studies/scalar/trials", params=params).status_code == 422


def test_history_returns_trials_after_a_number(seeded_client: TestClient) -> None:
    everything = seeded_client.get("/api/studies/scalar/history").json()["items"]
    later = seeded_client.get("/api/studies/scalar/history", params={"after": 4}).json()["items"]

    assert [t["number"] for t in everything] == list(range(7))
    assert set(everything[0]) == {"number", "state", "objective", "values"}
    assert later == everything[5:]


def test_trial_detail_has_config_and_per_epoch_curves(seeded_client: TestClient, seeded: Seeded) -> None:
    trial = seeded_client.get("/api/studies/scalar/trials/2").json()
    reference = _study(seeded, "scalar").trials[2]

    assert set(trial) == ROW_KEYS | {"config", "fail_reason", "epochs"}
    assert trial["config"] == reference.user_attrs["config"]
    assert trial["fail_reason"] is None
    assert [e["epoch"] for e in trial["epochs"]] == [0, 1]
    curve = trial["epochs"][1]["tasks"]["y2"]
    assert set(curve) == {"train_loss", "val_loss", "metric", "weight", "sigma", "grad_norm", "series"}
    assert curve["metric"] == pytest.approx(trial["tasks"]["y2"]["metric"])

    newer = seeded_client.get("/api/studies/scalar/trials/2", params={"after_epoch": 0}).json()
    assert [e["epoch"] for e in newer["epochs"]] == [1]


def test_sigma_and_grad_norm_are_read_from_the_series(seeded_client: TestClient, seeded: Seeded) -> None:
    strategies = {t.number: t.params.get("strategy", "equal") for t in _study(seeded, "scalar").trials}
    reported = {
        "uncertainty": {"sigma"},
        "uncertainty-positive": {"sigma"},
        "gradnorm": {"grad_norm", "grad_norm_target"},
    }
    assert set(reported) & set(strategies.values())  # the seeded study ran a strategy that reports series
    for number, strategy in strategies.items():
        trial = seeded_client.get(f"/api/studies/scalar/trials/{number}").json()
        for epoch in trial["epochs"]:
            for curve in epoch["tasks"].values():
                assert set(curve["series"]) == reported.get(strategy, set())
                assert curve["sigma"] == curve["series"].get("sigma")
                assert curve["grad_norm"] == curve["series"].get("grad_norm")
        final = trial["tasks"]["y1"]
        assert set(final["series"]) == reported.get(strategy, set())


def test_unknown_trial_is_404(seeded_client: TestClient) -> None:
    response = seeded_client.get("/api/studies/scalar/trials/99")
    assert response.status_code == 404
    assert "99" in response.json()["detail"]


def test_importance_is_computed_in_the_background(seeded_client: TestClient, seeded: Seeded) -> None:
    deadline = time.monotonic() + 30
    result = seeded_client.get("/api/studies/scalar/importance").json()
    assert result["status"] in ("computing", "ready")
    while result["status"] != "ready" and time.monotonic() < deadline:
        time.sleep(0.05)
        result = seeded_client.get("/api/studies/scalar/importance").json()

    assert result["status"] == "ready", result
    assert result["n_trials"] == 7 and not result["stale"] and result["computed_at"]
    searched = set().union(*(t.params for t in _study(seeded, "scalar").trials))
    assert result["importances"] and set(result["importances"]) <= searched
    assert math.isclose(sum(result["importances"].values()), 1.0, rel_tol=1e-6)


def test_importance_needs_enough_trials(sqlite_client: TestClient) -> None:
    sqlite_client.post("/api/studies", json={"problem": "uncertainty-toy", "name": "fresh"})
    result = sqlite_client.get("/api/studies/fresh/importance").json()
    assert result["status"] == "unavailable" and result["importances"] == {} and "5" in result["note"]
