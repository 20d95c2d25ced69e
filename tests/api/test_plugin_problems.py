"""Plugin problems over REST: listed with their knobs and declared directions, broken ones with their errors,
launchable by name; the directions reach the study's detail and comparison. A request never names a module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api import catalog
from tests.plugins import BROKEN_IMPORT, NEEDS_DATA, TASKS_RAISE, WAVE

WAVE_STUDY = {"problem": "plugin-wave", "problem_options": {"n": 40}, "epochs": 1, "sampler": "random"}


@pytest.fixture
def plugins(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test plugin named by the operator; the catalog is read afresh."""
    monkeypatch.setenv("MTL_TUNE_PLUGINS", ",".join([WAVE, BROKEN_IMPORT, TASKS_RAISE, NEEDS_DATA]))
    catalog.problems.cache_clear()
    yield plugin_dir
    catalog.problems.cache_clear()


@pytest.fixture
def app(plugins: Path, make_client: Callable[..., TestClient], sqlite_url: str) -> TestClient:
    return make_client(sqlite_url)


def run_worker(url: str, study: str) -> None:
    from tuner.study import Worker, WorkerSettings

    Worker(WorkerSettings(url=url, study_name=study, exit_when_idle=True, device="cpu")).run()


def test_plugins_are_listed_with_knobs_and_directions_and_broken_ones_with_errors(app: TestClient) -> None:
    listed = app.get("/api/problems").json()
    problems = {p["name"]: p for p in listed["problems"]}
    wave = problems["plugin-wave"]
    assert wave["tasks"] == [
        {"name": "sin", "kind": "regression", "metric": "r2_score", "direction": "maximize"},
        {"name": "sign", "kind": "classification", "metric": "accuracy", "direction": "minimize"},
    ]
    assert wave["model_knobs"]["width"] == {
        "default": 8, "low": 4.0, "high": 16.0, "log": False, "choices": None, "help": "shared width",
    }  # fmt: skip
    assert wave["default_space"]["model"] == {"width": {"low": 4.0, "high": 16.0, "log": False}, "depth": 1}
    assert problems["plugin-from-data"]["tasks_declared_by_options"] is True
    assert problems["plugin-from-data"]["tasks"] == []
    broken = {b["name"]: b for b in listed["broken"]}
    assert set(broken) == {BROKEN_IMPORT, "plugin-moody"}
    assert broken[BROKEN_IMPORT]["error"] == "failed to import: RuntimeError: this plugin cannot be imported"
    assert broken["plugin-moody"]["source"] == f"module {TASKS_RAISE}"
    assert {"gradnorm-toy", "uncertainty-toy", "multi-digits", "csv"} <= set(problems)
    import mtl_tune_needs_data_plugin

    assert mtl_tune_needs_data_plugin.LOAD_CALLS == []


def test_a_plugin_problem_runs_over_rest_and_its_directions_reach_the_study(app: TestClient, sqlite_url: str) -> None:
    created = app.post("/api/studies", json={**WAVE_STUDY, "name": "wave", "n_trials": 2, "pruner": "none"})
    assert created.status_code == 201, created.text
    run_worker(sqlite_url, "wave")
    study = app.get("/api/studies/wave").json()
    assert study["status"] == "completed"
    assert [(t["name"], t["metric"], t["direction"]) for t in study["tasks"]] == [
        ("sin", "r2_score", "maximize"),
        ("sign", "accuracy", "minimize"),
    ]
    comparison = study["comparison"]
    assert {task: (c["metric"], c["direction"]) for task, c in comparison.items()} == {
        "sin": ("r2_score", "maximize"),
        "sign": ("accuracy", "minimize"),
    }


def test_a_pareto_study_of_a_plugin_follows_its_tasks_directions(app: TestClient) -> None:
    body = {**WAVE_STUDY, "name": "wave-front", "n_trials": 1, "objective": "pareto", "sampler": "nsga2"}
    assert app.post("/api/studies", json=body).status_code == 201
    assert app.get("/api/studies/wave-front").json()["directions"] == ["maximize", "minimize"]


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("plugin-moody", "tasks are not available today"),
        (BROKEN_IMPORT, "this plugin cannot be imported"),
        ("os.path", "unknown problem 'os.path'"),  # a module name is never imported for a request
        (f"{WAVE}:Wave", "unknown problem"),
    ],
)
def test_a_broken_plugin_or_a_module_name_is_refused_by_name(app: TestClient, problem: str, message: str) -> None:
    response = app.post("/api/studies", json={"problem": problem, "n_trials": 1})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "problem"] and message in detail["msg"]


def test_other_problems_launch_beside_broken_plugins(app: TestClient) -> None:
    body = {"name": "toy", "problem": "uncertainty-toy", "problem_options": {"n_train": 50, "n_val": 20}}
    assert app.post("/api/studies", json=body).status_code == 201


def test_a_study_recorded_before_tasks_had_directions_reads_its_metric_names(
    make_client: Callable[..., TestClient], sqlite_url: str
) -> None:
    from tests.api.helpers import run_study

    run_study(sqlite_url, name="old", n_trials=1, sampler="random", pruner="none")
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:  # as a study of version 1 was recorded: no "tasks" attribute
        connection.execute(text("DELETE FROM study_user_attributes WHERE key = 'tasks'"))
    engine.dispose()
    tasks = make_client(sqlite_url).get("/api/studies/old").json()["tasks"]
    assert [(t["name"], t["metric"], t["direction"]) for t in tasks] == [
        ("y1", "rmse", "minimize"),
        ("y2", "rmse", "minimize"),
    ]
