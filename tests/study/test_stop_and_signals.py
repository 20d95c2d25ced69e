"""Stop requests, SIGTERM and remote-worker modes of ``study run``."""

from __future__ import annotations

import signal
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

import storage
from storage import queries
from tests.study.test_workers import FINISHED, _wait_for_running_trial, ended, launch, start_worker


@pytest.mark.slow
def test_stop_ends_the_running_trial_at_an_epoch_boundary_and_resume_finishes(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    launch(url, "halt", n_trials=3, epochs=40, problem="gradnorm-toy", options={"n_train": 300, "n_val": 100})
    worker = start_worker(url, "halt", "--exit-when-idle")
    running = _wait_for_running_trial(url, "halt", min_epochs=1)
    with storage.session_scope(url) as session:
        assert storage.request_stop(session, "halt").status == "stopping"
    code, err = ended(worker, 120)
    assert code == 0, err[-3000:]
    study = optuna.load_study(study_name="halt", storage=url)
    stopped = study.get_trials()[running]
    assert stopped.state == TrialState.FAIL
    assert "asked to stop" in stopped.user_attrs["fail_reason"] and stopped.user_attrs["interrupted"] is True
    assert len(stopped.intermediate_values) < 40
    with storage.session_scope(url) as session:
        assert storage.get_job(session, "halt").status == "stopped"
        counts = storage.claim_counts(session, "halt")
        assert counts["interrupted"] == 1 and counts["failed"] == 0  # not the trial's failure
        storage.resume(session, "halt")
    ended(start_worker(url, "halt", "--exit-when-idle"), 300)
    assert sum(t.state in FINISHED for t in study.get_trials()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "closed-terminal"])
def test_sigterm_marks_the_running_trial_interrupted_and_frees_its_slot(tmp_path, signum: signal.Signals) -> None:
    url = f"sqlite:///{tmp_path / 'term.db'}"
    launch(url, "term", n_trials=2, epochs=40, problem="gradnorm-toy", options={"n_train": 300, "n_val": 100})
    worker = start_worker(url, "term")
    running = _wait_for_running_trial(url, "term", min_epochs=1)
    worker.send_signal(signum)
    code, err = ended(worker, 60)
    assert code != -signum, err[-3000:]  # handled, not killed by the signal
    trial = optuna.load_study(study_name="term", storage=url).get_trials()[running]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    with storage.session_scope(url) as session:
        counts = storage.claim_counts(session, "term")
        job = storage.get_job(session, "term")
        summary = queries.summary(session, job_id=job.id, number=running)
    assert counts["running"] == 0 and counts["interrupted"] == 1 and counts["failed"] == 0
    assert summary is not None and summary.state == "interrupted"
    assert storage.claim_slot(url, study_name="term", worker="next", grace_seconds=60) is not None  # slot freed


@pytest.mark.slow
def test_detach_then_workers_zero_follows_a_worker_started_elsewhere(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    base = [
        sys.executable,
        "-m",
        "mtl_tune_cli.main",
        "study",
        "run",
        "--problem",
        "uncertainty-toy",
        "--trials",
        "3",
        "--epochs",
        "2",
        "--study",
        "remote",
        "--storage",
        url,
    ]
    out = subprocess.run([*base, "--detach"], capture_output=True, text=True, check=True, timeout=120)
    assert "created" in out.stdout
    with storage.session_scope(url) as session:
        assert storage.get_job(session, "remote").status == "queued"
    follower = subprocess.Popen([*base, "--workers", "0"], stdout=subprocess.PIPE, text=True)
    ended(start_worker(url, "remote", "--exit-when-idle"), 300)
    text, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0
    assert "remote" in text and "completed" in text
