"""``serve`` and ``worker`` at start: the token ``serve`` makes and keeps, a device the machine lacks, and a database
server that is not there yet."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import torch
import typer
from psycopg import sql
from typer.testing import CliRunner

import storage
from api.settings import Settings
from mtl_tune_cli import _common
from mtl_tune_cli._common import wait_for_database
from mtl_tune_cli.main import app
from mtl_tune_cli.serve_cmd import _token
from mtl_tune_cli.worker_cmd import check_device
from tests.pg import ADMIN_DSN, require_postgres

MTL = [sys.executable, "-m", "mtl_tune_cli.main"]


def test_serve_makes_a_token_on_its_first_start_and_keeps_it(tmp_path: Path) -> None:
    settings = Settings(storage="sqlite://", token_file=tmp_path / "conf" / "api-token")
    first, source = _token(settings, no_token=False)
    assert first is not None and len(first.get_secret_value()) >= 32 and source == str(settings.token_file)
    assert stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600  # readable by its owner only
    again, _ = _token(settings, no_token=False)
    assert again is not None and again.get_secret_value() == first.get_secret_value()
    other, _ = _token(Settings(storage="sqlite://", token_file=tmp_path / "other"), no_token=False)
    assert other is not None and other.get_secret_value() != first.get_secret_value()


def test_a_token_from_the_environment_wins_and_no_token_must_be_asked_for(tmp_path: Path) -> None:
    given = Settings(storage="sqlite://", api_token="from-env", token_file=tmp_path / "api-token")
    token, source = _token(given, no_token=False)
    assert token is not None and token.get_secret_value() == "from-env" and source == "MTL_TUNE_API_TOKEN"
    assert not given.token_file.exists()
    assert _token(Settings(storage="sqlite://", token_file=tmp_path / "t"), no_token=True) == (None, "none")


def test_no_token_contradicting_a_set_token_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = CliRunner().invoke(app, ["serve", "--no-token", "--storage", url], env={"MTL_TUNE_API_TOKEN": "x"})
    assert result.exit_code == 2 and "--no-token" in result.stderr
    assert not (tmp_path / "s.db").exists()  # refused before anything else


def test_a_worker_refuses_a_device_this_machine_lacks(tmp_path: Path) -> None:
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:0"
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = CliRunner().invoke(app, ["worker", "--device", missing, "--storage", url, "--exit-when-idle"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert f"'{missing}'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w.db").exists()  # refused before touching the database


def test_a_worker_accepts_a_device_this_machine_has(tmp_path: Path) -> None:
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = CliRunner().invoke(app, ["worker", "--device", device, "--storage", url, "--exit-when-idle"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "0 trial(s)" in result.stdout


@pytest.mark.postgres
def test_a_worker_waits_for_a_database_that_is_not_there_yet() -> None:
    require_postgres()
    name = f"mtl_tune_wait_{uuid.uuid4().hex[:12]}"
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    user, host, port = info.get("user", "postgres"), info.get("host", "127.0.0.1"), info.get("port", 5432)
    url = f"postgresql+psycopg://{user}:pw@{host}:{port}/{name}"
    env = {**os.environ, "MTL_TUNE_STORAGE": url}
    worker = subprocess.Popen([*MTL, "worker", "--exit-when-idle", "--device", "cpu"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert worker.stderr is not None
        line = worker.stderr.readline()
        while line and "waiting for the database" not in line:  # past any warning printed at import
            line = worker.stderr.readline()
        assert "waiting for the database" in line and name in line and ":pw@" not in line, line
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        assert "0 trial(s)" in out
        assert storage.current_revision(url) == storage.head_revision()  # it set the database up and went on
    finally:
        worker.kill()
        storage.dispose_engines()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_serve_and_worker_wait_for_a_database_server_with_bounded_back_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://user:pa55word@db-host/studies"
    attempts: list[str] = []
    waits: list[float] = []

    def ensure_schema(given: str) -> str:
        attempts.append(given)
        if len(attempts) < 8:
            raise storage.StorageUnavailable(f"storage unavailable at {storage.redact(given)}: connection refused")
        return storage.head_revision()

    monkeypatch.setattr(storage, "ensure_schema", ensure_schema)
    monkeypatch.setattr(_common.time, "sleep", waits.append)
    _common.wait_for_database(url)
    assert len(attempts) == 8 and waits == [1, 2, 4, 8, 16, 30, 30]
    err = capsys.readouterr().err
    assert err.count("waiting for the database") == 7 and "pa55word" not in err


def test_an_unreachable_sqlite_file_is_not_waited_for(tmp_path: Path) -> None:
    with pytest.raises(storage.StorageUnavailable):
        wait_for_database(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")


def test_serve_refuses_devices_this_machine_lacks_before_starting_workers(tmp_path: Path) -> None:
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:0"
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = CliRunner().invoke(app, ["serve", "--storage", url, "--devices", f"cpu,{missing}"])
    assert result.exit_code == 2 and f"'{missing}'" in result.stderr, (result.stdout, result.stderr)
    assert not (tmp_path / "s.db").exists()


def test_a_gpu_index_past_the_last_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU, on any machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda:0")
    check_device("cuda")
    with pytest.raises(typer.Exit) as refused:
        check_device("cuda:1")
    assert refused.value.exit_code == 2 and "'cuda:1'" in capsys.readouterr().err


def test_study_run_workers_get_the_password_through_their_environment(tmp_path: Path) -> None:
    from mtl_tune_cli.study_cmd import _spawn_worker

    url = "postgresql+psycopg://tuner:s3cret-pw@127.0.0.1:9/nowhere"  # nothing listens: the worker waits
    proc = _spawn_worker(url, "some-study", 0, None, None, 1)
    try:
        deadline = time.monotonic() + 10
        while b"--study" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd: before, /proc shows the parent's fork
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert b"s3cret-pw" not in cmdline and b"--study" in cmdline
        assert b"s3cret-pw" in environ
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_malformed_limit_at_its_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTL_TUNE_MAX_EPOCHS", "many")
    monkeypatch.setenv("MTL_TUNE_TOKEN_FILE", str(tmp_path / "token"))
    result = CliRunner().invoke(app, ["serve", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--workers", "0"])
    assert result.exit_code == 2
    assert "MTL_TUNE_MAX_EPOCHS" in result.output and "'many'" in result.output
    assert not (tmp_path / "token").exists()  # refused before anything was made
