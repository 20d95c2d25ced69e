"""Per-epoch rows in one transaction with the claim's heartbeat; trial summaries; progress reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import IntegrityError

import storage
from storage.models import utcnow
from tests.storage.helpers import count, rows

MakeJob = Callable[..., storage.StudyJob]


def _heartbeat_at(url: str, claim_id: int) -> datetime:
    with storage.session_scope(url) as session:
        claim = session.get(storage.TrialClaim, claim_id)
        assert claim is not None
        return claim.heartbeat_at


def _claim_with_old_heartbeat(url: str) -> tuple[int, datetime]:
    claim_id = storage.claim_slot(url, study_name="study", worker="w", grace_seconds=600)
    assert claim_id is not None
    old = utcnow() - timedelta(seconds=30)
    with storage.session_scope(url) as session:
        session.execute(update(storage.TrialClaim).where(storage.TrialClaim.id == claim_id).values(heartbeat_at=old))
    return claim_id, _heartbeat_at(url, claim_id)


def test_write_epoch_is_one_insert_and_bumps_the_heartbeat(storage_url: str, make_job: MakeJob) -> None:
    job = make_job()
    claim_id, old = _claim_with_old_heartbeat(storage_url)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = storage.get_engine(storage_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        with storage.session_scope(storage_url) as session:
            rows_ = [*rows("a", "b"), *rows("c", series={"sigma": 0.5, "grad_norm": 2.0, "cosine": -0.25})]
            storage.write_epoch(session, job_id=job.id, trial_number=3, epoch=0, rows=rows_, claim_id=claim_id)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert sum(s.lstrip().upper().startswith("INSERT INTO EPOCH_METRICS") for s in statements) == 1
    assert _heartbeat_at(storage_url, claim_id) > old

    with storage.session_scope(storage_url) as session:
        curves = storage.trial_curves(session, job_id=job.id, trial_number=3)
    assert [(m.epoch, m.task, m.weight, m.series) for m in curves] == [
        (0, "a", 1.0, None),
        (0, "b", 1.0, None),
        (0, "c", 1.0, {"sigma": 0.5, "grad_norm": 2.0, "cosine": -0.25}),
    ]


def test_a_non_finite_series_value_is_stored_as_null(storage_url: str, make_job: MakeJob) -> None:
    job = make_job()
    with storage.session_scope(storage_url) as session:
        series = {"sigma": float("nan"), "grad_norm": float("inf"), "cosine": 0.5}
        storage.write_epoch(session, job_id=job.id, trial_number=0, epoch=0, rows=rows("a", series=series))
    with storage.session_scope(storage_url) as session:
        (row,) = storage.trial_curves(session, job_id=job.id, trial_number=0)
    assert row.series == {"sigma": None, "grad_norm": None, "cosine": 0.5}  # the names stay: JSON has no NaN


def test_a_failing_row_rolls_back_the_whole_epoch(storage_url: str, make_job: MakeJob) -> None:
    job = make_job()
    claim_id, old = _claim_with_old_heartbeat(storage_url)
    with pytest.raises(IntegrityError), storage.session_scope(storage_url) as session:
        bad = rows("a", "b", "a")  # the same task twice violates the (job, trial, epoch, task) key
        storage.write_epoch(session, job_id=job.id, trial_number=0, epoch=0, rows=bad, claim_id=claim_id)
    with storage.session_scope(storage_url) as session:
        assert count(session, storage.EpochMetric) == 0
    assert _heartbeat_at(storage_url, claim_id) == old


def test_curves_come_back_by_epoch_then_task(storage_url: str, make_job: MakeJob) -> None:
    job = make_job()
    with storage.session_scope(storage_url) as session:
        for epoch in (1, 0):
            storage.write_epoch(session, job_id=job.id, trial_number=0, epoch=epoch, rows=rows("b", "a"))
        storage.write_epoch(session, job_id=job.id, trial_number=1, epoch=0, rows=rows("a"))
    with storage.session_scope(storage_url) as session:
        curves = storage.trial_curves(session, job_id=job.id, trial_number=0)
    assert [(m.epoch, m.task) for m in curves] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


def test_write_summary_upserts(storage_url: str, make_job: MakeJob) -> None:
    job = make_job()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    common: dict[str, Any] = {"job_id": job.id, "trial_number": 4, "params": {"lr": 0.1}, "duration_s": 2.5}
    with storage.session_scope(storage_url) as session:
        storage.write_summary(
            session, state="running", values=None, task_metrics=None, started_at=start, finished_at=None, **common
        )
    tasks = {"a": {"val_loss": 0.2, "metric": 0.9, "weight": 1.0, "sigma": None}}
    with storage.session_scope(storage_url) as session:
        storage.write_summary(
            session, state="complete", values=[0.25, 3.0], task_metrics=tasks, started_at=start,
            finished_at=start + timedelta(seconds=2.5), **common,
        )  # fmt: skip
    with storage.session_scope(storage_url) as session:
        (summary,) = session.query(storage.TrialSummary).all()
    assert (summary.state, summary.objective, summary.values) == ("complete", 0.25, [0.25, 3.0])
    assert summary.task_metrics == tasks and summary.params == {"lr": 0.1}
    assert summary.started_at == start and summary.finished_at == start + timedelta(seconds=2.5)


def test_non_finite_numbers_of_a_diverged_trial_are_stored_as_null(storage_url: str, make_job: MakeJob) -> None:
    job = make_job()
    tasks = {"a": {"val_loss": float("nan"), "metric": float("inf"), "weight": 1.0, "sigma": None}}
    with storage.session_scope(storage_url) as session:
        storage.write_summary(
            session, job_id=job.id, trial_number=0, state="failed", values=[float("nan")], params={},
            task_metrics=tasks, duration_s=1.0, started_at=None, finished_at=None,
        )  # fmt: skip
    with storage.session_scope(storage_url) as session:
        (summary,) = session.query(storage.TrialSummary).all()
    assert summary.objective is None and summary.values == [None]
    assert summary.task_metrics == {"a": {"val_loss": None, "metric": None, "weight": 1.0, "sigma": None}}


@pytest.mark.parametrize(("direction", "best"), [("minimize", 0.1), ("maximize", 0.7)])
def test_progress_reports_counts_and_the_best_value(
    storage_url: str, make_job: MakeJob, direction: str, best: float
) -> None:
    job = make_job(directions=[direction], n_trials=4)
    for number, (state, value) in enumerate([("complete", 0.1), ("complete", 0.7), ("pruned", 0.05)]):
        claim_id = storage.claim_slot(storage_url, study_name="study", worker="w", grace_seconds=60)
        with storage.session_scope(storage_url) as session:
            assert claim_id is not None
            storage.finish_claim(session, claim_id, state=state)
            storage.write_summary(
                session, job_id=job.id, trial_number=number, state=state, values=[value], params={},
                task_metrics=None, duration_s=None, started_at=None, finished_at=None,
            )  # fmt: skip
    with storage.session_scope(storage_url) as session:
        progress = storage.study_progress(session, "study")
    assert (progress.complete, progress.pruned, progress.failed, progress.running) == (2, 1, 0, 0)
    assert (progress.n_trials, progress.status, progress.best_value) == (4, "running", best)
