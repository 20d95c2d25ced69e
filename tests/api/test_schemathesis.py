"""Property-based requests generated from the app's own OpenAPI schema (in-process ASGI): never a 5xx, and every
documented response matches its schema."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

import storage
from api.main import create_app
from api.settings import Settings
from tests.api.helpers import run_study

KNOWN = "fuzz"  # a study with finished trials, so generated requests also reach real data
# schemathesis reads the schema when the module is imported, so the app (and its database path) exist by then; the
# database itself is created and seeded by the fixture below.
_DIR = Path(tempfile.mkdtemp(prefix="mtl-tune-fuzz-"))
_URL = f"sqlite:///{_DIR / 'fuzz.db'}"
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(Settings(storage=_URL, data_dir=_DIR, max_body_bytes=65536))
)
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def _seeded() -> Iterator[None]:
    run_study(_URL, name=KNOWN, n_trials=3, sampler="random")
    yield
    storage.dispose_engines()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
    if "name" in (case.path_parameters or {}) and case.method != "DELETE":
        case.path_parameters = {**case.path_parameters, "name": KNOWN}
        case.call_and_validate(checks=CHECKS)
