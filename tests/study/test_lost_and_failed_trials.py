"""Trials that fail or lose their worker are failed with a reason, counted, listed and retried; the baseline too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
from optuna.trial import TrialState
from sqlalchemy import update

import storage
from storage import queries
from storage.models import utcnow
from tests.study.test_workers import launch
from tuner.study import Worker, WorkerSettings
from tuner.study import _trial as trial_module
from tuner.train import train


def _worker(url: str, name: str, **settings: Any) -> Worker:
    return Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, poll_seconds=0.05, **settings))


def test_a_failed_baseline_is_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'baseline.db'}"
    launch(url, "base", n_trials=2, epochs=1)
    calls: list[int] = []

    def first_fails(
        problem: Any, config: Any, *, device: Any = None, on_epoch_end: Callable | None = None, **kw: Any
    ) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return train(problem, config, device=device, on_epoch_end=on_epoch_end, **kw)

    with mock.patch.object(trial_module, "train", first_fails):
        _worker(url, "base").run()
    trials = optuna.load_study(study_name="base", storage=url).get_trials()
    baselines = [t for t in trials if t.user_attrs.get(storage.BASELINE_ATTR)]
    assert [t.state for t in baselines] == [TrialState.FAIL, TrialState.COMPLETE]
    assert baselines[0].number == 0


def test_a_trial_whose_worker_died_is_failed_listed_and_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dead.db'}"
    launch(url, "dead", n_trials=1, epochs=1)
    # A worker claims a slot, starts the baseline and is killed before its first heartbeat.
    claim = storage.claim_slot(url, study_name="dead", worker="gone:1", grace_seconds=60)
    assert claim is not None
    started = optuna.load_study(study_name="dead", storage=url).ask()
    long_ago = utcnow() - timedelta(hours=1)
    with storage.session_scope(url) as session:
        storage.attach_trial(session, claim, started.number)
        session.execute(update(storage.TrialClaim).values(heartbeat_at=long_ago))

    _worker(url, "dead").run()

    trials = optuna.load_study(study_name="dead", storage=url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[0].state == TrialState.FAIL and "lost" in trials[0].user_attrs["fail_reason"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert [t.state for t in retried] == [TrialState.COMPLETE]
    assert retried[0].user_attrs[storage.BASELINE_ATTR] and "fail_reason" not in retried[0].user_attrs
    with storage.session_scope(url) as session:
        job = storage.get_job(session, "dead")
        assert job.status == "completed"
        assert storage.claim_counts(session, "dead")["failed"] == 1
        assert queries.count_trials(session, job_id=job.id, state="failed") == 1


def test_a_trial_lost_after_its_study_reached_the_target_is_failed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    launch(url, "late", n_trials=1, epochs=1)
    claim = storage.claim_slot(url, study_name="late", worker="gone:1", grace_seconds=60)
    assert claim is not None
    started = optuna.load_study(study_name="late", storage=url).ask()
    with storage.session_scope(url) as session:
        storage.attach_trial(session, claim, started.number)
        session.execute(update(storage.TrialClaim).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        storage.set_status(session, "late", "completed")  # the target was reached meanwhile

    _worker(url, "late").run()  # nothing to run; it still fails what dead workers left

    trials = optuna.load_study(study_name="late", storage=url).get_trials()
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # retried if the study is resumed
