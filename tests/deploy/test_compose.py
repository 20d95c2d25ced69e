"""docker-compose.yml is checked without a Docker engine: its shape, and its commands against the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_their_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"db", "migrate", "api", "worker"} <= set(services)
    assert services["db"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["db"]["volumes"])
    assert "pgdata" in compose["volumes"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_api_binds_all_interfaces_without_local_workers(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    cmd = api["command"]
    assert cmd[0] == "serve"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--workers") + 1] == "0"
    assert "MTL_TUNE_API_TOKEN" in api["environment"] and "MTL_TUNE_STORAGE" in api["environment"]
    assert any(str(p).endswith(":8000") for p in api["ports"])


def test_workers_reserve_a_gpu_and_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in worker  # a fixed name would forbid --scale worker=N
    assert not worker.get("ports")
    cpu = compose["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu


def test_every_variable_the_compose_file_needs_is_documented() -> None:
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    documented = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert used <= documented, used - documented


@pytest.mark.parametrize("service", ["migrate", "api", "worker", "worker-cpu"])
def test_each_command_is_a_real_cli_command(compose: dict[str, Any], service: str) -> None:
    cmd = compose["services"][service]["command"]
    words = [w for w in cmd if not w.startswith("-")]
    subcommand = [w for w in words if not re.fullmatch(r"[\d.]+|cuda|cpu", w)]
    out = subprocess.run(
        [sys.executable, "-m", "mtl_tune_cli.main", *subcommand, "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for flag in (w for w in cmd if w.startswith("--")):
        assert flag in out.stdout, f"{service}: {flag} is not an option of `mtl-tune {' '.join(subcommand)}`"


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in text
    assert 'ENTRYPOINT ["mtl-tune"]' in text
    for package in ("tuner", "api", "storage", "mtl_tune_cli"):
        assert f"COPY {package} ./{package}" in text
