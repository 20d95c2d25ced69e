from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from sqlalchemy import select
from typer.testing import CliRunner

import storage
from mtl_tune_cli.main import app
from storage.models import ConfirmationRun, TrialClaim
from tuner.checkpoint import load_model
from tuner.config import TrainConfig
from tuner.train import resolve_config

MTL = [sys.executable, "-m", "mtl_tune_cli.main"]
storage_session = storage.session_scope
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def mtl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*MTL, *args], capture_output=True, text=True, check=check, timeout=300, env=env)


def cli(*args: str, code: int = 0) -> tuple[str, str]:
    """Read-only commands run in-process: same code path, without a new interpreter per call."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_study_lifecycle_from_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = mtl(
        "study",
        "run",
        "--problem",
        "uncertainty-toy",
        "--trials",
        "5",
        "--epochs",
        "2",
        "--study",
        "life",
        "--storage",
        url,
        "--workers",
        "2",
        "--sampler",
        "random",
        "--option",
        "n_train=200",
    )
    assert "created" in run.stdout
    study = optuna.load_study(study_name="life", storage=url)
    assert sum(t.state in FINISHED for t in study.get_trials()) == 5
    assert len({t.number for t in study.get_trials()}) == len(study.get_trials())

    with storage_session(url) as session:
        assert storage.get_job(session, "life").problem_options == {"n_train": 200}
    listed = cli("study", "list", "--storage", url)[0]
    assert "life" in listed and "completed" in listed

    shown = " ".join(cli("study", "show", "life", "--storage", url)[0].split())
    assert "best vs baseline" in shown and "y1" in shown and "y2" in shown
    # The workers confirmed the study when it reached its target: the verdict is the test split's.
    assert "verdict on the test split, seeds 1000–1002: confirmation complete" in shown
    assert "95 % paired t interval" in shown and ("beats" in shown or "within noise" in shown)
    again = " ".join(mtl("study", "confirm", "life", "--storage", url, "--seeds", "4").stdout.split())
    assert "seeds 1000–1003: confirmation complete" in again
    with storage_session(url) as session:
        runs = session.scalars(select(ConfirmationRun)).all()
        assert {r.state for r in runs} == {"complete"} and {r.seed for r in runs} == {1000, 1001, 1002, 1003}
    assert sum(t.state in FINISHED for t in optuna.load_study(study_name="life", storage=url).get_trials()) == 5

    best = json.loads(cli("study", "best", "life", "--storage", url, "--json")[0])
    assert best["problem"] == "uncertainty-toy" and best["config"]["epochs"] == 2
    assert best["values"][0] == min(t.value for t in study.get_trials() if t.state == TrialState.COMPLETE)

    model_file = tmp_path / "best.pt"
    retrained = cli(
        "study", "best", "life", "--storage", url, "--retrain", "--save", str(model_file), "--device", "cpu"
    )[0]
    assert f"trial {best['trial']} of life, trained again" in retrained and "y1" in retrained
    problem, model, config = load_model(model_file)
    assert problem.name == "uncertainty-toy" and config == resolve_config(
        problem, TrainConfig.model_validate(best["config"])
    )
    assert set(model(torch.zeros(4, 1))) == {"y1", "y2"}  # the saved weights rebuild a working model
    refused = mtl("study", "best", "life", "--storage", url, "--save", str(model_file), check=False)
    assert refused.returncode == 2 and "--save needs --retrain" in refused.stderr

    rows = json.loads(cli("study", "export", "life", "--storage", url, "--format", "json")[0])
    assert len(rows) == len(study.get_trials()) and {"number", "state", "params", "tasks"} <= set(rows[0])
    csv_text = cli("study", "export", "life", "--storage", url, "--format", "csv")[0]
    assert csv_text.splitlines()[0].startswith("number,state")

    cli("study", "delete", "life", "--storage", url, "--yes")
    assert "life" not in cli("study", "list", "--storage", url)[0]
    missing = mtl("study", "show", "life", "--storage", url, check=False)
    assert missing.returncode == 2 and "life" in missing.stderr and "Traceback" not in missing.stderr


def test_ctrl_c_leaves_nothing_running_and_the_same_command_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'int.db'}"
    cmd = [
        *MTL,
        "study",
        "run",
        "--problem",
        "gradnorm-toy",
        "--trials",
        "4",
        "--epochs",
        "30",
        "--study",
        "intr",
        "--storage",
        url,
        "--pruner",
        "none",
        "--sampler",
        "random",
        "--option",
        "n_train=400",
        "--confirm-seeds",
        "0",  # confirmation is tested on its own: this resumes trials
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # As in a terminal, whatever started the tests: a shell's background job inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="intr", storage=url).get_trials()
        except Exception:  # the study may not exist yet
            continue
        finished = sum(t.state in FINISHED for t in trials)
        # A trial running after one finished, with another still to come: the study cannot end before the signal.
        if any(t.state == TrialState.RUNNING for t in trials) and 1 <= finished <= 2:
            break
    assert proc.poll() is None, "the study finished before a trial could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    proc.wait(timeout=120)
    assert proc.returncode == 130
    trials = optuna.load_study(study_name="intr", storage=url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state in FINISHED for t in trials) < 4
    with storage_session(url) as session:
        assert storage.get_job(session, "intr").status == "stopped"
        counts = storage.claim_counts(session, "intr")
    assert counts["interrupted"] == 1 and counts["failed"] == 0  # the trial Ctrl-C cut is not a failure
    header, row = mtl("study", "list", "--storage", url).stdout.splitlines()[1:4:2]
    columns = dict(zip(header.replace("┃", "│").split("│")[1:-1], row.split("│")[1:-1], strict=True))
    assert {k.strip(): v.strip() for k, v in columns.items()}.items() >= {"failed": "0", "interrupted": "1"}.items()
    assert "interrupted 1" in mtl("study", "show", "intr", "--storage", url).stdout

    subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    trials = optuna.load_study(study_name="intr", storage=url).get_trials()
    assert sum(t.state in FINISHED for t in trials) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_invalid_space_file_is_refused_with_its_field(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("lr_shared: {low: 0.1, high: 0.01}\n")
    out = mtl(
        "study",
        "run",
        "--problem",
        "uncertainty-toy",
        "--space",
        str(space),
        "--storage",
        f"sqlite:///{tmp_path / 'x.db'}",
        check=False,
    )
    assert out.returncode == 2
    assert "lr_shared" in out.stderr and "low" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_help_says_how_pareto_studies_are_pruned() -> None:
    text = " ".join(mtl("study", "run", "--help").stdout.split())
    assert "Pareto studies: none (default) or dominated" in text
    assert "dominated by those of 3 finished trials" in text
    assert "MTL_TUNE_STORAGE" in text


@pytest.mark.parametrize("workers", [1, 2])
def test_one_local_worker_runs_in_the_launching_process_more_run_in_their_own(tmp_path: Path, workers: int) -> None:
    url = f"sqlite:///{tmp_path / 'where.db'}"
    args = ["study", "run", "--problem", "uncertainty-toy", "--trials", "3", "--epochs", "1", "--study", "where"]
    args += ["--storage", url, "--workers", str(workers), "--sampler", "random", "--option", "n_train=100"]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([*MTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "3/3" in out
    with storage_session(url) as session:
        pids = {int(c.worker.rsplit(":", 1)[1]) for c in session.scalars(select(TrialClaim))}
    assert (pids == {proc.pid}) if workers == 1 else (proc.pid not in pids and len(pids) >= 1)


def test_a_request_over_a_limit_exits_2_naming_the_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'limit.db'}"
    _, err = cli("study", "run", "--problem", "gradnorm-toy", "--option", "n_train=3000000", "--storage", url, code=2)
    assert "problem_options.n_train" in err and "MTL_TUNE_MAX_SAMPLES" in err


def _detached(url: str, *args: str, code: int = 0) -> tuple[str, str]:
    base = ("--problem", "uncertainty-toy", "--option", "n_train=100", "--study", "again", "--storage", url)
    return cli("study", "run", *base, "--epochs", "2", "--trials", "2", "--detach", *args, code=code)


def test_running_a_study_again_with_other_settings_needs_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    assert "created" in _detached(url)[0]
    assert "resumed" in _detached(url, "--trials", "3")[0]  # the same settings, a higher target

    _, err = _detached(url, "--epochs", "3", "--sampler", "random", code=2)
    assert "epochs: 2 (requested: 3)" in err and "sampler: tpe (requested: random)" in err and "--resume" in err
    assert "resumed" in _detached(url, "--epochs", "3", "--sampler", "random", "--resume")[0]
    with storage_session(url) as session:
        job = storage.get_job(session, "again")
        assert (job.epochs, job.sampler, job.n_trials) == (2, "tpe", 3)


def test_a_run_whose_study_fails_exits_non_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fails.db'}"
    _detached(url)
    with storage_session(url) as session:  # options no worker can build the problem from (as after an upgrade)
        storage.get_job(session, "again").problem_options = {"bogus": 1}
    out = mtl(
        "study", "run", "--problem", "uncertainty-toy", "--study", "again", "--storage", url, "--resume", check=False
    )
    assert out.returncode == 1, out.stderr
    assert "study again failed" in out.stderr and "bogus" in out.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_closed_terminal_leaves_the_study_stopped(tmp_path: Path, workers: int) -> None:
    url = f"sqlite:///{tmp_path / 'hup.db'}"
    # Trials of several seconds: the hangup must reach the run before its three trials are done.
    cmd = [*MTL, "study", "run", "--problem", "gradnorm-toy", "--option", "n_train=2000", "--epochs", "200"]
    cmd += ["--trials", "3", "--study", "hup", "--storage", url, "--pruner", "none", "--workers", str(workers)]
    cmd += ["--confirm-seeds", "0"]  # the hangup must reach it while trials run
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="hup", storage=url).get_trials()
        except Exception:  # the study may not exist yet
            continue
        if any(t.state == TrialState.RUNNING for t in trials):
            break
    assert proc.poll() is None, "the study finished before its terminal closed"
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode(errors="replace")[-3000:]
    trials = optuna.load_study(study_name="hup", storage=url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    with storage_session(url) as session:
        assert storage.get_job(session, "hup").status == "stopped"
        assert not session.scalars(select(TrialClaim).where(TrialClaim.state == "running")).all()
