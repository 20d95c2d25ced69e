"""Studies over REST: launch, list, read, stop, resume, delete, and every refusal (404, 409, 422)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient

import storage
from tests.api.helpers import launch_body

SUMMARY_KEYS = {
    "name", "problem", "problem_options", "objective", "directions", "status", "sampler", "pruner", "epochs",
    "n_trials", "trials", "best_value", "created_at", "updated_at", "last_error",
}  # fmt: skip
DETAIL_KEYS = SUMMARY_KEYS | {"space", "tasks", "best", "baseline", "comparison", "confirm_seeds"}


def test_launch_records_a_queued_study_and_its_optuna_study(client: TestClient, url: str) -> None:
    response = client.post("/api/studies", json=launch_body(name="first", objective="pareto", sampler="nsga2"))

    assert response.status_code == 201, response.text
    study = response.json()
    assert set(study) == DETAIL_KEYS
    assert [study[k] for k in ("name", "status", "objective", "pruner")] == ["first", "queued", "pareto", "none"]
    assert study["directions"] == ["minimize", "minimize"]
    assert study["trials"] == {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "interrupted": 0}
    assert study["tasks"] == [
        {"name": "y1", "kind": "regression", "metric": "rmse", "direction": "minimize"},
        {"name": "y2", "kind": "regression", "metric": "rmse", "direction": "minimize"},
    ]
    assert study["space"]["lr_shared"] == {"low": 0.001, "high": 0.1, "log": True}  # the problem's default space
    assert (study["best"], study["baseline"], study["comparison"]) == ([], None, {})
    with storage.session_scope(url) as session:
        assert storage.get_job(session, "first").source == "rest"
    loaded = optuna.load_study(study_name="first", storage=storage.optuna_storage(url))
    assert [t.user_attrs for t in loaded.trials] == [{"baseline": True}]


def test_a_name_is_generated_when_absent(sqlite_client: TestClient) -> None:
    response = sqlite_client.post("/api/studies", json=launch_body())
    assert response.status_code == 201
    assert response.json()["name"].startswith("uncertainty-toy-")


def test_list_and_read(client: TestClient) -> None:
    for name in ("a", "b"):
        assert client.post("/api/studies", json=launch_body(name=name)).status_code == 201

    studies = client.get("/api/studies").json()["studies"]
    assert [s["name"] for s in studies] == ["b", "a"]  # newest first
    assert set(studies[0]) == SUMMARY_KEYS
    detail = client.get("/api/studies/a").json()
    assert set(detail) == DETAIL_KEYS and detail["name"] == "a"


def test_duplicate_name_is_409(client: TestClient) -> None:
    assert client.post("/api/studies", json=launch_body(name="dup")).status_code == 201
    response = client.post("/api/studies", json=launch_body(name="dup"))
    assert response.status_code == 409
    assert "dup" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (launch_body(space={"lr_shared": {"low": 2.0, "high": 1.0}}), ["body", "space", "lr_shared"]),
        (launch_body(space={"weights": {"nope": 1.0}}), ["body", "space", "weights", "nope"]),
        (launch_body(space={"strategy": ["magic"]}), ["body", "space", "strategy"]),
        (launch_body(space={"chain": "detach"}), ["body", "space", "chain"]),
        (launch_body(space={"bogus": 1}), ["body", "space", "bogus"]),
        (launch_body(problem="no-such-problem"), ["body", "problem"]),
        (launch_body(problem_options={"bogus": 1}), ["body", "problem_options", "bogus"]),
        (launch_body(problem_options={"n_train": 1}), ["body", "problem_options", "n_train"]),
        (launch_body(sampler="annealing"), ["body", "sampler"]),
        (launch_body(pruner="sometimes"), ["body", "pruner"]),
        (launch_body(objective="both"), ["body", "objective"]),
        (launch_body(name="no spaces"), ["body", "name"]),
        (launch_body(name="x" * 65), ["body", "name"]),
        (launch_body(name="../etc"), ["body", "name"]),
        (launch_body(n_trials=0), ["body", "n_trials"]),
        (launch_body(seed=-1), ["body", "seed"]),
        (launch_body(extra=1), ["body", "extra"]),
        ({"n_trials": 3}, ["body", "problem"]),
        (launch_body(n_trials=True), ["body", "n_trials"]),
        (launch_body(n_trials=50_000), ["body", "n_trials"]),
        (launch_body(epochs=5_000), ["body", "epochs"]),
        (
            launch_body(problem="gradnorm-toy", problem_options={"n_train": 3_000_000}),
            ["body", "problem_options", "n_train"],
        ),
        (launch_body(space={"model": {"hidden": {"low": 8, "high": 10**6}}}), ["body", "space", "model", "hidden"]),
        (launch_body(space={"batch_size": [32, 10**6]}), ["body", "space", "batch_size"]),
        (launch_body(space={"lr_shared": {"low": -0.1, "high": 0.1, "log": False}}), ["body", "space", "lr_shared"]),
    ],
)
def test_invalid_launch_is_422_naming_the_field(
    shared_client: TestClient, body: dict[str, object], loc: list[str]
) -> None:
    response = shared_client.post("/api/studies", json=body)

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc, detail
    assert detail[0]["msg"]
    assert shared_client.get("/api/studies").json() == {"studies": []}  # nothing was recorded


def test_non_finite_numbers_are_422(shared_client: TestClient) -> None:
    body = '{"problem": "uncertainty-toy", "space": {"lr_shared": {"low": NaN, "high": 1.0}}}'
    response = shared_client.post("/api/studies", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "finite" in response.text


def test_malformed_json_is_422(shared_client: TestClient) -> None:
    response = shared_client.post("/api/studies", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


CSV = "x1,x2,y\n" + "".join(f"{i % 7},{i % 3},{i % 5}\n" for i in range(40))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "table.csv").write_text(CSV)
    (tmp_path / "secret.csv").write_text(CSV)
    (data / "link.csv").symlink_to(tmp_path / "secret.csv")
    return data


def test_csv_data_is_read_inside_the_data_directory(
    make_client: Callable[..., TestClient], sqlite_url: str, data_dir: Path
) -> None:
    client = make_client(sqlite_url, data_dir=data_dir)
    body = launch_body(problem="csv", problem_options={"data": "sub/table.csv", "target": ["y:regression"]})

    response = client.post("/api/studies", json=body)

    assert response.status_code == 201, response.text
    study = response.json()
    assert study["problem_options"]["data"] == str((data_dir / "sub" / "table.csv").resolve())
    assert [t["name"] for t in study["tasks"]] == ["y"]


@pytest.mark.parametrize("data", ["../secret.csv", "sub/../../secret.csv", "/etc/passwd", "link.csv", "", 3, None])
def test_csv_data_outside_the_data_directory_is_422(
    make_client: Callable[..., TestClient], sqlite_url: str, data_dir: Path, data: object
) -> None:
    client = make_client(sqlite_url, data_dir=data_dir)
    body = launch_body(problem="csv", problem_options={"data": data, "target": ["y:regression"]})

    response = client.post("/api/studies", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "problem_options", "data"]


def test_missing_csv_file_is_422(make_client: Callable[..., TestClient], sqlite_url: str, data_dir: Path) -> None:
    client = make_client(sqlite_url, data_dir=data_dir)
    body = launch_body(problem="csv", problem_options={"data": "absent.csv", "target": ["y:regression"]})
    response = client.post("/api/studies", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "problem_options", "data"]


def test_a_refused_csv_launch_leaves_nothing_and_the_corrected_one_succeeds(
    make_client: Callable[..., TestClient], url: str, data_dir: Path
) -> None:
    client = make_client(url, data_dir=data_dir)
    bad = launch_body(
        name="table", problem="csv", problem_options={"data": "sub/table.csv", "target": ["z:regression"]}
    )
    response = client.post("/api/studies", json=bad)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "problem_options", "target"]
    assert client.get("/api/studies").json() == {"studies": []}
    assert optuna.get_all_study_names(storage.optuna_storage(url)) == []

    good = {**bad, "problem_options": {"data": "sub/table.csv", "target": ["y:regression"]}}
    assert client.post("/api/studies", json=good).status_code == 201


def test_a_task_name_the_database_cannot_hold_is_422_on_every_backend(
    make_client: Callable[..., TestClient], url: str, data_dir: Path
) -> None:
    long = "y" * 129
    (data_dir / "long.csv").write_text(CSV.replace("x1,x2,y", f"x1,x2,{long}"))
    client = make_client(url, data_dir=data_dir)
    body = launch_body(problem="csv", problem_options={"data": "long.csv", "target": [f"{long}:regression"]})
    response = client.post("/api/studies", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "problem_options", "target"] and "at most 128" in detail["msg"]
    assert client.get("/api/studies").json() == {"studies": []}


def test_a_csv_over_the_column_limit_is_422(
    make_client: Callable[..., TestClient], sqlite_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTL_TUNE_MAX_CSV_COLUMNS", "2")
    client = make_client(sqlite_url, data_dir=data_dir)
    body = launch_body(problem="csv", problem_options={"data": "sub/table.csv", "target": ["y:regression"]})
    response = client.post("/api/studies", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "problem_options", "data"] and "MTL_TUNE_MAX_CSV_COLUMNS" in detail["msg"]


def test_stop_and_resume(client: TestClient) -> None:
    client.post("/api/studies", json=launch_body(name="s"))

    stopped = client.post("/api/studies/s/stop", json={})
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped"  # no trial was running
    assert set(stopped.json()) == SUMMARY_KEYS
    resumed = client.post("/api/studies/s/resume", json={})
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"


def test_delete_removes_the_optuna_study_and_the_job(client: TestClient, url: str) -> None:
    client.post("/api/studies", json=launch_body(name="gone"))

    assert client.delete("/api/studies/gone").status_code == 204

    assert client.get("/api/studies/gone").status_code == 404
    assert optuna.get_all_study_names(storage=storage.optuna_storage(url)) == []
    assert client.post("/api/studies", json=launch_body(name="gone")).status_code == 201  # the name is free again


def test_a_study_deleted_with_optunas_tools_is_refused_by_name_and_can_be_deleted(
    sqlite_client: TestClient, sqlite_url: str
) -> None:
    sqlite_client.post("/api/studies", json=launch_body(name="gone"))
    optuna.delete_study(study_name="gone", storage=storage.optuna_storage(sqlite_url))

    queued = sqlite_client.post("/api/studies/gone/trials", json={"params": {"strategy": "equal"}})
    assert queued.status_code == 404 and "mtl-tune study delete gone" in queued.text
    assert sqlite_client.delete("/api/studies/gone").status_code == 204
    assert sqlite_client.get("/api/studies/gone").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/studies/nope"),
        ("POST", "/api/studies/nope/stop"),
        ("POST", "/api/studies/nope/resume"),
        ("DELETE", "/api/studies/nope"),
        ("GET", "/api/studies/nope/trials"),
        ("GET", "/api/studies/nope/trials/0"),
        ("GET", "/api/studies/nope/history"),
        ("GET", "/api/studies/nope/importance"),
        ("POST", "/api/studies/nope/trials"),
        ("POST", "/api/studies/nope/confirm"),
        ("GET", "/api/studies/nope/verdict"),
    ],
)
def test_unknown_study_is_404(shared_client: TestClient, method: str, path: str) -> None:
    body = ({} if path.endswith("confirm") else {"params": {"lr_shared": 0.01}}) if method == "POST" else None
    response = shared_client.request(method, path, json=body)
    assert response.status_code == 404, response.text
    assert "nope" in response.json()["detail"]


@pytest.mark.parametrize("name", ["a%20b", "-lead", "x" * 65, "a;b", "%2E%2E"])
def test_invalid_study_name_in_path_is_422(shared_client: TestClient, name: str) -> None:
    assert shared_client.get(f"/api/studies/{name}").status_code == 422
