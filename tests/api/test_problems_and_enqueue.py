"""``GET /api/problems`` and warm-start enqueuing (``POST /api/studies/{name}/trials``)."""

from __future__ import annotations

import optuna
import pytest
from fastapi.testclient import TestClient

import storage
from api.schemas import NAME_PATTERN, StudyCreate
from tests.api.helpers import client_for, launch_body, run_study


def test_problems_list_tasks_default_space_and_options(sqlite_client: TestClient) -> None:
    listed = sqlite_client.get("/api/problems").json()
    problems = {p["name"]: p for p in listed["problems"]}
    assert listed["broken"] == []

    assert {"uncertainty-toy", "gradnorm-toy", "multi-digits", "csv"} <= set(problems)
    toy = problems["uncertainty-toy"]
    assert toy["description"]
    assert toy["tasks"] == [
        {"name": "y1", "kind": "regression", "metric": "rmse", "direction": "minimize"},
        {"name": "y2", "kind": "regression", "metric": "rmse", "direction": "minimize"},
    ]
    assert toy["default_space"]["lr_shared"] == {"low": 0.001, "high": 0.1, "log": True}
    assert set(toy["options"]["properties"]) >= {"n_train", "n_val", "seed"}
    assert toy["model_knobs"]["hidden"]["default"] == toy["default_space"]["model"]["hidden"]
    assert toy["tasks_declared_by_options"] is False
    assert problems["multi-digits"]["tasks"][0]["direction"] == "maximize"
    csv = problems["csv"]
    assert csv["tasks"] == [] and csv["tasks_declared_by_options"] is True
    assert "data" in csv["options"]["properties"] and csv["default_space"]


def test_the_request_schema_mirrors_the_study_spec() -> None:
    from tuner.study import _spec

    spec_fields = _spec.StudySpec.model_fields
    assert list(StudyCreate.model_fields) == list(spec_fields)
    assert NAME_PATTERN == _spec.NAME_PATTERN
    for name, field in StudyCreate.model_fields.items():
        assert field.annotation == spec_fields[name].annotation, name
        assert field.get_default(call_default_factory=True) == spec_fields[name].get_default(call_default_factory=True)


@pytest.fixture
def done(url: str) -> str:
    return run_study(url, name="done", n_trials=2, sampler="random", pruner="none")


def test_enqueue_reopens_a_completed_study_and_the_trial_runs(url: str, done: str) -> None:
    params = {"strategy": "uncertainty", "lr_shared": 0.02, "lr_heads": 0.005, "lr_weighting": 0.1}
    with client_for(url) as client:
        response = client.post("/api/studies/done/trials", json={"params": params})
        assert response.status_code == 202, response.text
        assert response.json() == {"study": "done", "params": params, "status": "queued"}
        study = client.get("/api/studies/done").json()
        assert (study["status"], study["n_trials"]) == ("queued", 3)
        waiting = client.get("/api/studies/done/trials/2").json()
        assert (waiting["state"], waiting["epochs"]) == ("waiting", [])

        run_study_worker(url)
        trial = client.get("/api/studies/done/trials/2").json()
        assert trial["state"] == "complete"
        assert trial["params"] == pytest.approx(params)
        assert client.get("/api/studies/done").json()["status"] == "completed"
    optuna_trial = optuna.load_study(study_name="done", storage=storage.optuna_storage(url)).trials[2]
    assert optuna_trial.params == pytest.approx(params)


def run_study_worker(url: str) -> None:
    from tuner.study import Worker, WorkerSettings

    Worker(WorkerSettings(url=url, study_name="done", exit_when_idle=True, device="cpu")).run()


@pytest.mark.parametrize(
    ("params", "name", "message"),
    [
        ({"learning_rate": 0.1}, "learning_rate", "not searched"),
        ({"lr_shared": 5.0}, "lr_shared", "outside"),
        ({"lr_shared": "fast"}, "lr_shared", "number"),
        ({"strategy": "magic"}, "strategy", "not one of"),
        ({"weight_decay": 0.1}, "weight_decay", "not searched"),  # fixed in the default space
        ({"weight_y3": 1.0}, "weight_y3", "not searched"),
        ({"gradnorm.alpha": 3.5}, "gradnorm.alpha", "outside [0.0, 3.0]"),  # a strategy's own knob
        ({"alpha": 1.0}, "alpha", "not searched"),
    ],
)
def test_enqueue_refuses_parameters_the_space_does_not_search(
    sqlite_client: TestClient, params: dict[str, object], name: str, message: str
) -> None:
    sqlite_client.post("/api/studies", json=launch_body(name="s"))
    response = sqlite_client.post("/api/studies/s/trials", json={"params": params})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "params", name] and message in detail["msg"]


@pytest.mark.parametrize("body", [{}, {"params": {}}, {"params": []}, {"params": {"a": [1]}}, {"params": {"a": None}}])
def test_enqueue_body_must_hold_parameters(sqlite_client: TestClient, body: object) -> None:
    sqlite_client.post("/api/studies", json=launch_body(name="s"))
    assert sqlite_client.post("/api/studies/s/trials", json=body).status_code == 422


def test_enqueue_into_a_queued_study_keeps_its_target(sqlite_client: TestClient) -> None:
    sqlite_client.post("/api/studies", json=launch_body(name="s"))
    response = sqlite_client.post(
        "/api/studies/s/trials", json={"params": {"strategy": "gradnorm", "gradnorm.alpha": 1.5}}
    )
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert sqlite_client.get("/api/studies/s").json()["n_trials"] == 3
