"""A job a worker cannot read is failed with the reason, and the worker goes on with the others; a job of a problem
this worker does not have is left to the workers that have it."""

from __future__ import annotations

import logging

import optuna
import pytest

import storage
from tests.storage.helpers import JOB_DEFAULTS
from tests.study.helpers import TINY
from tuner.study import StudySpec, Worker, WorkerSettings, create_study


def test_jobs_a_worker_cannot_read_are_failed_and_the_others_run(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage.ensure_schema(sqlite_url)
    with storage.session_scope(sqlite_url) as session:  # a job whose Optuna study is gone
        storage.create_job(session, study_name="orphan", **JOB_DEFAULTS)
    optuna.create_study(study_name="unknown", storage=storage.optuna_storage(sqlite_url))
    with storage.session_scope(sqlite_url) as session:  # a problem this version does not know
        storage.create_job(session, study_name="unknown", **(JOB_DEFAULTS | {"problem": "no-such-problem"}))
    spec = StudySpec(name="good", problem="uncertainty-toy", problem_options=TINY, n_trials=2, epochs=1)
    create_study(sqlite_url, spec, source="cli")

    worker = Worker(WorkerSettings(url=sqlite_url, exit_when_idle=True, poll_seconds=0.1, device="cpu"))
    with caplog.at_level(logging.WARNING, logger="mtl_tune.worker"):
        assert worker.run() == 2

    with storage.session_scope(sqlite_url) as session:
        orphan, unknown, good = (storage.get_job(session, name) for name in ("orphan", "unknown", "good"))
        assert orphan.status == "failed" and "no study named 'orphan'" in (orphan.last_error or "")
        assert unknown.status == "queued"  # perhaps a plugin that other workers have
        assert good.status == "completed"
        assert storage.claim_counts(session, "orphan")["running"] == 0
    assert "orphan" in caplog.text
    assert "problem 'no-such-problem' is not available on this worker (not installed)" in caplog.text
    assert caplog.text.count("no-such-problem") == 1  # said once, not at every poll


def test_a_job_whose_options_its_problem_refuses_is_failed(sqlite_url: str) -> None:
    storage.ensure_schema(sqlite_url)
    optuna.create_study(study_name="bad-options", storage=storage.optuna_storage(sqlite_url))
    options = {"problem": "uncertainty-toy", "problem_options": {"n_train": -5}}
    with storage.session_scope(sqlite_url) as session:
        storage.create_job(session, study_name="bad-options", **(JOB_DEFAULTS | options))
    Worker(WorkerSettings(url=sqlite_url, exit_when_idle=True, poll_seconds=0.1, device="cpu")).run()
    with storage.session_scope(sqlite_url) as session:
        job = storage.get_job(session, "bad-options")
        assert job.status == "failed" and "n_train" in (job.last_error or "")
