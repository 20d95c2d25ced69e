"""On PostgreSQL, a worker whose connections are dropped (``pg_terminate_backend``) in the middle of a trial fails
that trial with the reason and goes on: it never exits, and the study still reaches its target."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState

import storage
from tests.dropped_connections import terminate_backends
from tests.pg import fresh_database
from tuner.study import StudySpec, Worker, WorkerSettings, create_study
from tuner.study import _trial as trial_module


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


SPEC = StudySpec(name="s", problem="uncertainty-toy", problem_options={"n_train": 64, "n_val": 32}, n_trials=3,
                 epochs=1, sampler="random", space={"strategy": ["equal", "uncertainty"]})  # fmt: skip


@pytest.mark.parametrize("step", ["suggest_config", "train"])
def test_a_trial_whose_connections_drop_fails_with_the_reason_and_the_worker_goes_on(pg_url: str, step: str) -> None:
    """``suggest_config``: the trial's first read of the study meets the dead connection; ``train``: its first
    epoch's write does, then Optuna's tell (whose pruner reads the study before the final state is written)."""
    create_study(pg_url, SPEC, source="cli")
    real = getattr(trial_module, step)
    calls: list[int] = []

    def dropping(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first trial after the baseline
            assert terminate_backends(pg_url) > 0
        return real(*args, **kwargs)

    with mock.patch.object(trial_module, step, dropping):
        Worker(WorkerSettings(url=pg_url, study_name="s", exit_when_idle=True, poll_seconds=0.05, device="cpu")).run()

    trials = optuna.load_study(study_name="s", storage=pg_url).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs.get("fail_reason"), [(t.state, t.user_attrs) for t in trials]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    with storage.session_scope(pg_url) as session:
        assert storage.get_job(session, "s").status == "completed"
        assert storage.claim_counts(session, "s")["running"] == 0


def test_a_claim_whose_trial_could_not_start_frees_its_slot_at_once(pg_url: str) -> None:
    """The connection drops as the worker asks Optuna for the trial of the slot it claimed: the slot is given back
    then, not held by a claim with no trial until its grace period ends (the study "running", with no live trial
    and no error, meanwhile)."""
    create_study(pg_url, SPEC, source="cli")
    real = optuna.Study.ask
    calls: list[int] = []

    def dropping(self: optuna.Study, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first trial after the baseline
            assert terminate_backends(pg_url) > 0
        return real(self, *args, **kwargs)

    # The grace period outlasts the test: only the worker that claimed the slot can free it. The deadline ends the
    # worker if it waits for that slot all the same.
    settings = WorkerSettings(url=pg_url, study_name="s", exit_when_idle=True, poll_seconds=0.05, device="cpu",
                              grace_seconds=600, deadline=time.time() + 20)  # fmt: skip
    with mock.patch.object(optuna.Study, "ask", dropping):
        Worker(settings).run()

    with storage.session_scope(pg_url) as session:
        counts = storage.claim_counts(session, "s")
        assert (storage.get_job(session, "s").status, counts["running"]) == ("completed", 0), counts
