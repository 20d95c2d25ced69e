"""Helpers for the API tests: databases per backend, started apps, small finished studies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import storage
from api.main import create_app
from api.settings import Settings
from tests.pg import fresh_database

TINY = {"n_train": 200, "n_val": 100}
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'api.db'}"
        storage.dispose_engines()
    else:
        with fresh_database("mtl_tune_api") as url:
            yield url


@contextmanager
def client_for(url: str, **settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(storage=url, **settings))) as client:
        yield client


def run_study(url: str, **fields: Any) -> str:
    """Create a study through the study layer and run it to its target with one in-process worker."""
    import torch

    from tuner.study import StudySpec, Worker, WorkerSettings, create_study

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster and keeps runs reproducible
    try:
        spec = {"problem": "uncertainty-toy", "problem_options": dict(TINY), "epochs": 2, "confirm_seeds": 0, **fields}
        name = create_study(url, StudySpec.model_validate(spec), source="cli").study_name
        Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu")).run()
    finally:
        torch.set_num_threads(threads)
    return name


def launch_body(**fields: Any) -> dict[str, Any]:
    return {"problem": "uncertainty-toy", "problem_options": dict(TINY), "epochs": 2, "n_trials": 3, **fields}
