"""Study jobs: what was asked for, and the status workers and users move it through."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from storage._engine import StudyExists, StudyNotFound, write_lock
from storage.models import StudyJob, TrialClaim

JOB_STATUSES = ("queued", "running", "stopping", "stopped", "completed", "failed")
ACTIVE_STATUSES = ("queued", "running")
OBJECTIVES = ("scalar", "pareto", "compare")  # compare: scalar, with every strategy given an even budget
SOURCES = ("cli", "rest")
DIRECTIONS = ("minimize", "maximize")
STUDY_NAME_MAX = 64


def create_job(
    session: Session, *, study_name: str, objective: str, directions: Sequence[str], source: str, **columns: Any
) -> StudyJob:
    """Record a queued study job (``columns``: its other ``StudyJob`` columns); raises ``StudyExists`` when the
    name is taken."""
    _check_name(study_name)
    check_choice("objective", objective, OBJECTIVES)
    check_choice("source", source, SOURCES)
    for direction in directions:
        check_choice("direction", direction, DIRECTIONS)
    write_lock(session)
    if find_job(session, study_name) is not None:
        raise StudyExists(f"study {study_name!r} already exists")
    job = StudyJob(study_name=study_name, objective=objective, directions=list(directions), source=source, **columns)
    job.status = "queued"
    session.add(job)
    session.flush()
    return job


def find_job(session: Session, study_name: str) -> StudyJob | None:
    return session.scalars(select(StudyJob).where(StudyJob.study_name == study_name)).one_or_none()


def get_job(session: Session, study_name: str) -> StudyJob:
    """The job named ``study_name``; raises ``StudyNotFound``."""
    job = find_job(session, study_name)
    if job is None:
        raise StudyNotFound(f"no study named {study_name!r}")
    return job


def list_jobs(session: Session) -> list[StudyJob]:
    """Every job, newest first."""
    return list(session.scalars(select(StudyJob).order_by(StudyJob.created_at.desc(), StudyJob.id.desc())))


def set_status(session: Session, study_name: str, status: str, *, error: str | None = None) -> StudyJob:
    """Move a job to ``status``; ``error`` (when given) becomes its ``last_error``."""
    check_choice("status", status, JOB_STATUSES)
    write_lock(session)
    job = get_job(session, study_name)
    job.status = status
    if error is not None:
        job.last_error = error
    return job


def request_stop(session: Session, study_name: str) -> StudyJob:
    """Ask workers to stop: ``stopping`` while trials still run, ``stopped`` once none does."""
    write_lock(session)
    job = get_job(session, study_name)
    if job.status in ("queued", "running", "stopping"):
        job.status = "stopping" if running_claims(session, job.id) else "stopped"
    return job


def resume(session: Session, study_name: str) -> StudyJob:
    """Queue a stopped, failed or completed job again (workers then fill its missing trials)."""
    write_lock(session)
    job = get_job(session, study_name)
    if job.status not in ACTIVE_STATUSES:
        job.status = "queued"
        job.last_error = None
    return job


def delete_job(session: Session, study_name: str) -> None:
    """Delete the job and (by cascade) its claims, metrics and summaries; Optuna's study is not touched."""
    write_lock(session)
    result = session.execute(delete(StudyJob).where(StudyJob.study_name == study_name))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise StudyNotFound(f"no study named {study_name!r}")


def running_claims(session: Session, job_id: int) -> int:
    query = select(func.count()).where(TrialClaim.job_id == job_id, TrialClaim.state == "running")
    return session.scalar(query) or 0


def check_choice(field: str, value: str, allowed: Collection[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}: {value!r} is not one of {', '.join(allowed)}")


def _check_name(study_name: str) -> None:
    if not study_name or len(study_name) > STUDY_NAME_MAX:
        raise ValueError(f"study name must have 1 to {STUDY_NAME_MAX} characters, got {study_name!r}")


def job_status(session: Session, job_id: int) -> str | None:
    """Just the status column (workers read it every epoch); None when the job is gone."""
    return session.connection().scalar(_STATUS, {"job_id": job_id})


_STATUS = select(StudyJob.status).where(StudyJob.id == bindparam("job_id"))
