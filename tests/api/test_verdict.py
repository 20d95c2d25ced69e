"""``POST /api/studies/{name}/confirm`` and ``GET /api/studies/{name}/verdict``: confirmation through the workers,
judged on the test split; refusals name the problem."""

from __future__ import annotations

from fastapi.testclient import TestClient

import storage
from tests.api.helpers import client_for, run_study
from tuner.study import Worker, WorkerSettings


def test_confirm_queues_runs_that_workers_turn_into_a_verdict(url: str) -> None:
    name = run_study(url, name="v", n_trials=3, space={"strategy": ["equal", "static"]})
    with client_for(url) as client:
        before = client.get(f"/api/studies/{name}/verdict")
        assert before.status_code == 200 and before.json()["status"] == "not requested"

        queued = client.post(f"/api/studies/{name}/confirm", json={"seeds": 2})
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == "pending" and queued.json()["seeds"] == [1000, 1001]

        Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu")).run()
        verdict = client.get(f"/api/studies/{name}/verdict").json()
        study = client.get(f"/api/studies/{name}").json()
    assert verdict["status"] == "complete" and verdict["split"] == "test" and not verdict["optimistic"]
    assert verdict["runs"]["complete"] == 2 * len(verdict["candidates"]) and verdict["runs"]["failed"] == 0
    assert {t["name"] for t in verdict["tasks"]} == set(verdict["judgements"])
    assert verdict["sentence"]
    assert study["trials"]["complete"] + study["trials"]["pruned"] == 3  # the target is untouched


def test_confirm_refusals_name_the_problem(url: str) -> None:
    with client_for(url) as client:
        client.post("/api/studies", json={"name": "fresh", "problem": "uncertainty-toy", "n_trials": 2})
        nothing = client.post("/api/studies/fresh/confirm", json={})
        assert nothing.status_code == 409 and "no complete trial" in nothing.json()["detail"]
        one = client.post("/api/studies/fresh/confirm", json={"seeds": 1})
        assert one.status_code == 422 and "seeds" in one.text
        extra = client.post("/api/studies/fresh/confirm", json={"seed": 3})
        assert extra.status_code == 422
        with storage.session_scope(url) as session:
            assert storage.get_job(session, "fresh").confirm_pending is False


def test_a_launch_asks_for_two_seeds_or_none(sqlite_client: TestClient) -> None:
    body = {"problem": "uncertainty-toy", "n_trials": 2}
    one = sqlite_client.post("/api/studies", json={**body, "confirm_seeds": 1})
    assert one.status_code == 422 and "confirm_seeds" in one.text
    none = sqlite_client.post("/api/studies", json={**body, "name": "none", "confirm_seeds": 0})
    assert none.status_code == 201 and none.json()["confirm_seeds"] == 0
    default = sqlite_client.post("/api/studies", json={**body, "name": "default"})
    assert default.status_code == 201 and default.json()["confirm_seeds"] == 3
