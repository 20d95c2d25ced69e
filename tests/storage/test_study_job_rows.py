"""Study jobs: create, read, list, status changes, stop and resume, delete with its rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

import pytest

import storage
from tests.storage.helpers import JOB_DEFAULTS, count, rows

MakeJob = Callable[..., storage.StudyJob]


def test_create_and_get(storage_url: str, make_job: MakeJob) -> None:
    created = make_job("alpha", objective="pareto", directions=["minimize", "maximize"], space=None)
    assert created.id is not None and created.status == "queued"
    with storage.session_scope(storage_url) as session:
        job = storage.get_job(session, "alpha")
        assert storage.find_job(session, "missing") is None
    assert (job.problem, job.problem_options, job.space) == ("uncertainty-toy", {"n": 64}, None)
    assert (job.objective, job.directions, job.n_trials, job.source) == ("pareto", ["minimize", "maximize"], 10, "cli")
    assert job.created_at.tzinfo == UTC and job.updated_at >= job.created_at
    assert job.last_error is None


def test_duplicate_and_missing_names(storage_url: str, make_job: MakeJob) -> None:
    make_job("alpha")
    with pytest.raises(storage.StudyExists, match="alpha"):
        make_job("alpha")
    with pytest.raises(storage.StudyNotFound, match="beta"), storage.session_scope(storage_url) as session:
        storage.get_job(session, "beta")
    with pytest.raises(storage.StudyNotFound), storage.session_scope(storage_url) as session:
        storage.delete_job(session, "beta")


@pytest.mark.parametrize(
    "bad", [{"objective": "best"}, {"source": "web"}, {"directions": ["up"]}, {"study_name": "x" * 65}]
)
def test_invalid_values_are_value_errors(storage_url: str, bad: dict[str, str]) -> None:
    with pytest.raises(ValueError), storage.session_scope(storage_url) as session:
        storage.create_job(session, **({"study_name": "s"} | JOB_DEFAULTS | bad))


def test_list_newest_first(storage_url: str, make_job: MakeJob) -> None:
    for name in ("a", "b", "c"):
        make_job(name)
    with storage.session_scope(storage_url) as session:
        assert [job.study_name for job in storage.list_jobs(session)] == ["c", "b", "a"]


def test_status_error_stop_and_resume(storage_url: str, make_job: MakeJob) -> None:
    before = make_job("s", n_trials=2)
    with storage.session_scope(storage_url) as session:
        job = storage.set_status(session, "s", "failed", error="boom")
    assert (job.status, job.last_error) == ("failed", "boom")
    assert job.updated_at > before.updated_at
    with pytest.raises(ValueError, match="done"), storage.session_scope(storage_url) as session:
        storage.set_status(session, "s", "done")
    with storage.session_scope(storage_url) as session:
        job = storage.resume(session, "s")
    assert (job.status, job.last_error) == ("queued", None)

    with storage.session_scope(storage_url) as session:
        assert storage.request_stop(session, "s").status == "stopped"  # nothing was running
        storage.resume(session, "s")
    claim = storage.claim_slot(storage_url, study_name="s", worker="w", grace_seconds=60)
    assert claim is not None
    with storage.session_scope(storage_url) as session:
        assert storage.request_stop(session, "s").status == "stopping"
    assert storage.claim_slot(storage_url, study_name="s", worker="w", grace_seconds=60) is None
    with storage.session_scope(storage_url) as session:
        storage.finish_claim(session, claim, state="failed")
        assert storage.get_job(session, "s").status == "stopped"


def test_delete_cascades_to_claims_metrics_and_summaries(storage_url: str, make_job: MakeJob) -> None:
    job = make_job("gone")
    keep = make_job("kept")
    for name, job_id in (("gone", job.id), ("kept", keep.id)):
        claim = storage.claim_slot(storage_url, study_name=name, worker="w", grace_seconds=60)
        with storage.session_scope(storage_url) as session:
            storage.write_epoch(session, job_id=job_id, trial_number=0, epoch=0, rows=rows("a", "b"), claim_id=claim)
            storage.write_summary(
                session, job_id=job_id, trial_number=0, state="complete", values=[1.0], params={"x": 1},
                task_metrics=None, duration_s=1.0, started_at=None, finished_at=None,
            )  # fmt: skip
    with storage.session_scope(storage_url) as session:
        storage.delete_job(session, "gone")
    with storage.session_scope(storage_url) as session:
        assert [j.study_name for j in storage.list_jobs(session)] == ["kept"]
        counts = [count(session, m) for m in (storage.TrialClaim, storage.EpochMetric, storage.TrialSummary)]
    assert counts == [1, 2, 1]
