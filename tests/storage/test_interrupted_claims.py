"""Trials ended by an interrupt or a stop request are recorded ``interrupted``, not failed: their claim, their
summary, every count and the trial list's filter say so, and their slot is freed as a failed one's is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import storage
from storage import queries
from storage.claims import INTERRUPTED_ATTR
from storage.epochs import claim_state
from tests.storage.helpers import held_trial, shown_states


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _running(url: str, make_job: Callable[..., storage.StudyJob], **job: Any) -> tuple[storage.StudyJob, int, Any]:
    """A job ``s``, a claim of it, and a held trial told through its recorder; returns the job, claim and a
    function that ends the trial FAIL with the given user attributes."""
    made, claim, study, trial, recorder = held_trial(url, make_job, **job)
    recorder.start()
    recorder.epoch(0, [{"task": "a", "train_loss": 0.5, "val_loss": 0.4, "metric": 0.3, "weight": 1}])

    def fail(**attrs: Any) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.FAIL)
        assert recorder.finished

    return made, claim, fail


def _states(url: str, job_id: int, claim: int) -> tuple[str, str | None]:
    with storage.session_scope(url) as session:
        summary = queries.summary(session, job_id=job_id, number=0)
        row = session.get(storage.TrialClaim, claim)
        assert row is not None
        return row.state, summary.state if summary else None


def test_a_stopped_trial_is_interrupted_everywhere_and_the_study_stops(storage_url: str, make_job: Callable) -> None:
    job, claim, fail = _running(storage_url, make_job, n_trials=2)
    with storage.session_scope(storage_url) as session:
        assert storage.request_stop(session, "s").status == "stopping"
    fail(fail_reason="StopRequested: study 's' was asked to stop", **{INTERRUPTED_ATTR: True})

    assert _states(storage_url, job.id, claim) == ("interrupted", "interrupted")
    with storage.session_scope(storage_url) as session:
        assert storage.get_job(session, "s").status == "stopped"
        counts = storage.claim_counts(session, "s")
        assert counts == {"running": 0, "complete": 0, "pruned": 0, "failed": 0, "interrupted": 1}
        assert queries.claim_counts_by_job(session, job_ids=[job.id]) == {job.id: {"interrupted": 1}}
        progress = storage.study_progress(session, "s")
        assert (progress.failed, progress.interrupted) == (0, 1)
        assert queries.count_trials(session, job_id=job.id, state="failed") == 0
        total, rows = queries.trial_page(
            session, job_id=job.id, state="interrupted", order="number", limit=10, offset=0
        )
        assert total == 1 and [r.trial_number for r in rows] == [0]
    assert shown_states(storage_url) == {"interrupted": 1}

    # The slot is free again: a resumed study claims it.
    with storage.session_scope(storage_url) as session:
        storage.resume(session, "s")
    assert storage.claim_slot(storage_url, study_name="s", worker="w", grace_seconds=60) is not None
    assert storage.claim_slot(storage_url, study_name="s", worker="w", grace_seconds=60) is not None


def test_a_failed_trial_is_still_failed(storage_url: str, make_job: Callable) -> None:
    job, claim, fail = _running(storage_url, make_job)
    fail(fail_reason="RuntimeError: boom")
    assert _states(storage_url, job.id, claim) == ("failed", "failed")
    with storage.session_scope(storage_url) as session:
        counts = storage.claim_counts(session, "s")
        assert (counts["failed"], counts["interrupted"]) == (1, 0)
        assert queries.count_trials(session, job_id=job.id, state="failed") == 1
        assert queries.count_trials(session, job_id=job.id, state="interrupted") == 0
    assert shown_states(storage_url) == {"failed": 1}


def test_an_interrupted_claim_frees_its_slot_and_never_completes_a_job(storage_url: str, make_job: Callable) -> None:
    make_job(n_trials=1)
    first = storage.claim_slot(storage_url, study_name="study", worker="w", grace_seconds=60)
    assert first is not None
    assert storage.claim_slot(storage_url, study_name="study", worker="w", grace_seconds=60) is None
    with storage.session_scope(storage_url) as session:
        storage.finish_claim(session, first, state="interrupted")
        assert storage.get_job(session, "study").status == "running"
    assert storage.claim_slot(storage_url, study_name="study", worker="w", grace_seconds=60) is not None


def test_claim_state_reads_the_mark_on_failed_trials_only() -> None:
    def frozen(state: TrialState, **attrs: Any) -> optuna.trial.FrozenTrial:
        values = [0.1] if state == TrialState.COMPLETE else None
        return optuna.trial.create_trial(state=state, values=values, user_attrs=attrs)

    assert claim_state(frozen(TrialState.FAIL, **{INTERRUPTED_ATTR: True})) == "interrupted"
    assert claim_state(frozen(TrialState.FAIL)) == "failed"
    assert claim_state(frozen(TrialState.COMPLETE, **{INTERRUPTED_ATTR: True})) == "complete"
    assert claim_state(frozen(TrialState.PRUNED)) == "pruned"
    assert claim_state(None) == "failed"  # lost to another worker
