"""Confirmation runs: a study's chosen configurations trained again, each over several seeds, judged on held-out data.

A confirmation is asked for when a job reaches its target (``confirm_seeds`` > 0) or on demand
(``request_confirmation``); the job is then ``confirm_pending``. A worker chooses the configurations (it reads
Optuna's trials) and queues their runs in one transaction (``queue_runs``). Workers claim runs one at a time
(``claim_run``), keep them alive with heartbeats, and record their held-out metrics (``finish_run``). A run whose
worker went silent for the grace period is claimed again by the next worker, up to ``MAX_ATTEMPTS`` times.

Runs are mtl-tune's own rows: they never count toward the job's target, never reach Optuna's tables, and so never
feed the sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from storage._engine import get_engine, translate_errors, write_lock, write_transaction
from storage.jobs import get_job
from storage.models import ConfirmationRun, StudyJob, TrialSummary, utcnow

RUN_STATES = ("queued", "running", "complete", "failed")
#: A run whose worker went silent this many times is failed, with the reason, instead of taking a fourth worker down.
MAX_ATTEMPTS = 3
#: Seeds of confirmation runs: the study's seed plus these offsets, so no run repeats a trial's own training seed.
SEED_OFFSET = 1000
#: Bounds of a confirmation request, the same for the CLI, the API and a launch's ``confirm_seeds``.
MAX_SEEDS, MAX_TOP = 50, 20
DEFAULT_SEEDS = 3


def confirmation_seeds(study_seed: int, n: int) -> list[int]:
    """The training seeds of a study's ``n`` confirmation runs per configuration; every configuration gets the same
    ones, so runs are paired by seed."""
    return [study_seed + SEED_OFFSET + k for k in range(n)]


class NothingToConfirm(ValueError):
    """The study has no complete trial yet."""


def request_confirmation(session: Session, study_name: str, *, seeds: int | None = None, top: int = 1) -> StudyJob:
    """Ask workers to confirm the study: ``seeds`` runs for the baseline, the ``top`` best configurations, the best
    of each strategy tried (and for pareto studies the Pareto set). Without ``seeds``, the study's own number (that
    of its last confirmation, or of its launch), or ``DEFAULT_SEEDS`` when it has none. The study keeps the number:
    one still running confirms again, with as many seeds, when it reaches its target. Raises ``StudyNotFound``,
    ``NothingToConfirm``; ``ValueError`` when ``seeds`` is not 2 to ``MAX_SEEDS`` (one seed gives no interval) or
    ``top`` not 1 to ``MAX_TOP``."""
    if seeds is not None and not 2 <= seeds <= MAX_SEEDS:
        raise ValueError(f"seeds: 2 to {MAX_SEEDS} (an interval needs two), got {seeds}")
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top: 1 to {MAX_TOP}, got {top}")
    write_lock(session)
    job = get_job(session, study_name)
    if seeds is None:
        seeds = job.confirm_seeds if job.confirm_seeds >= 2 else DEFAULT_SEEDS
    complete = select(func.count()).where(TrialSummary.job_id == job.id, TrialSummary.state == "complete")
    if not session.scalar(complete):
        raise NothingToConfirm(f"study {study_name!r} has no complete trial yet: nothing to confirm")
    job.confirm_seeds, job.confirm_top, job.confirm_pending = seeds, top, True
    return job


def mark_confirm_pending(session: Session | Connection, job_id: int) -> None:
    """The job reached its target: its confirmation waits to be queued, when it asks for one. ``session`` may be a
    connection already in the transaction that completes the job."""
    query = update(StudyJob).where(StudyJob.id == job_id, StudyJob.confirm_seeds > 0)
    session.execute(query.values(confirm_pending=True))


def pending_confirmations(session: Session, *, study_name: str | None = None) -> list[StudyJob]:
    """Jobs whose confirmation waits for a worker to choose its configurations, oldest first."""
    query = select(StudyJob).where(StudyJob.confirm_pending.is_(True))
    if study_name is not None:
        query = query.where(StudyJob.study_name == study_name)
    return list(session.scalars(query.order_by(StudyJob.created_at, StudyJob.id)))


@dataclass(frozen=True)
class Candidate:
    """A configuration to confirm: its trial, why it is chosen, and its configuration (any seed; each run sets its
    own)."""

    trial_number: int
    roles: list[str]
    config: dict[str, Any]


def queue_runs(url: str, *, job_id: int, candidates: Sequence[Candidate]) -> int | None:
    """Queue ``confirm_seeds`` runs of each candidate, in one transaction that locks the job row; returns how many
    runs are current, or None when another worker queued them first (or the job is gone).

    The job's earlier runs stop being current; a chosen configuration's earlier run of the same seed is reused,
    a failed one queued again.
    """
    with write_transaction(url) as connection:
        query = select(StudyJob.confirm_pending, StudyJob.confirm_seeds, StudyJob.seed).where(StudyJob.id == job_id)
        job = connection.execute(query.with_for_update()).one_or_none()
        if job is None or not job.confirm_pending:
            return None
        connection.execute(update(ConfirmationRun).where(ConfirmationRun.job_id == job_id).values(current=False))
        seeds = confirmation_seeds(job.seed, max(job.confirm_seeds, 2))
        existing = {
            (r.trial_number, r.seed): (r.id, r.state)
            for r in connection.execute(
                select(ConfirmationRun.id, ConfirmationRun.trial_number, ConfirmationRun.seed, ConfirmationRun.state)
                .where(ConfirmationRun.job_id == job_id)
            )
        }  # fmt: skip
        new = []
        for candidate in candidates:
            for seed in seeds:
                found = existing.get((candidate.trial_number, seed))
                config = {**candidate.config, "seed": seed}
                if found is None:
                    new.append({
                        "job_id": job_id, "trial_number": candidate.trial_number, "seed": seed,
                        "roles": candidate.roles, "current": True, "config": config, "state": "queued", "attempts": 0,
                    })  # fmt: skip
                    continue
                values: dict[str, Any] = {"roles": candidate.roles, "current": True}
                if found[1] == "failed":
                    values |= {"state": "queued", "attempts": 0, "fail_reason": None, "config": config}
                connection.execute(update(ConfirmationRun).where(ConfirmationRun.id == found[0]).values(**values))
        if new:
            connection.execute(insert(ConfirmationRun), new)
        connection.execute(update(StudyJob).where(StudyJob.id == job_id).values(confirm_pending=False))
        return len(candidates) * len(seeds)


@dataclass(frozen=True)
class RunClaim:
    id: int
    job_id: int
    study_name: str
    trial_number: int
    seed: int
    config: dict[str, Any]


def _claimable(grace_seconds: float) -> Any:
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    stale = and_(ConfirmationRun.state == "running", ConfirmationRun.heartbeat_at <= cutoff)
    return and_(ConfirmationRun.current.is_(True), or_(ConfirmationRun.state == "queued", stale))


def claim_run(url: str, *, worker: str, grace_seconds: float, study_name: str | None = None) -> RunClaim | None:
    """Take the oldest queued current run (or one whose worker went silent for ``grace_seconds``), in one
    transaction; None when there is none.

    A run whose worker went silent ``MAX_ATTEMPTS`` times is failed with the reason and the next one is taken.
    On PostgreSQL concurrent claimers skip each other's locked rows; SQLite serialises them (``BEGIN IMMEDIATE``).
    """
    run = ConfirmationRun
    probe_query = (
        select(run.id, run.job_id, StudyJob.study_name, run.trial_number, run.seed, run.config, run.state, run.attempts)
        .join(StudyJob, StudyJob.id == run.job_id)
        .where(_claimable(grace_seconds))
        .order_by(StudyJob.created_at, run.seed, run.id)  # seed by seed: paired results come soonest
        .limit(1)
    )
    if study_name is not None:
        probe_query = probe_query.where(StudyJob.study_name == study_name)
    # Idle workers ask at every poll and there is rarely a run to take: look first, without the write lock
    # (``BEGIN IMMEDIATE`` on SQLite), and take it only when there may be one.
    with translate_errors(url), get_engine(url).connect() as probe:
        if probe.execute(probe_query).first() is None:
            return None
    query = probe_query.with_for_update(of=run, skip_locked=True)
    with write_transaction(url) as connection:
        while (row := connection.execute(query).one_or_none()) is not None:
            now = utcnow()
            if row.state == "running" and row.attempts >= MAX_ATTEMPTS:
                reason = f"lost its worker {row.attempts} times (killed, out of memory?); not tried again"
                failed = {"state": "failed", "fail_reason": reason, "finished_at": now}
                connection.execute(update(run).where(run.id == row.id).values(**failed))
                continue
            taken = {"state": "running", "worker": worker, "attempts": row.attempts + 1, "heartbeat_at": now}
            connection.execute(update(run).where(run.id == row.id).values(**taken))
            return RunClaim(row.id, row.job_id, row.study_name, row.trial_number, row.seed, dict(row.config))
    return None


def _held(run_id: int, worker: str) -> Any:
    """The run, while this worker holds it (another may have taken it over)."""
    return and_(ConfirmationRun.id == run_id, ConfirmationRun.state == "running", ConfirmationRun.worker == worker)


def run_heartbeat(session: Session, run_id: int, worker: str) -> None:
    """Keep a running run this worker holds: one silent for the grace period is claimed again by another."""
    session.execute(update(ConfirmationRun).where(_held(run_id, worker)).values(heartbeat_at=utcnow()))


def finish_run(
    session: Session,
    run_id: int,
    *,
    worker: str,
    split: str | None = None,
    results: dict[str, Any] | None = None,
    fail_reason: str | None = None,
) -> bool:
    """Record a run's held-out metrics (``results`` on ``split``) or why it failed; a run another worker took over
    meanwhile is left to it. Returns whether it was recorded."""
    state = "failed" if fail_reason is not None else "complete"
    values = {"state": state, "split": split, "results": results, "fail_reason": fail_reason, "finished_at": utcnow()}
    return bool(session.execute(update(ConfirmationRun).where(_held(run_id, worker)).values(**values)).rowcount)  # type: ignore[attr-defined]


def release_run(session: Session, run_id: int, *, worker: str) -> None:
    """Give a run back to the queue (its worker was interrupted): the next worker takes it at once, and the attempt
    does not count toward ``MAX_ATTEMPTS`` (those are for workers that went silent)."""
    values = {"state": "queued", "worker": None, "attempts": ConfirmationRun.attempts - 1}
    session.execute(update(ConfirmationRun).where(_held(run_id, worker)).values(**values))


def confirmation_work(session: Session, *, study_name: str | None = None) -> bool:
    """Whether any job (or the named one) has a confirmation to queue or runs not finished yet."""
    if pending_confirmations(session, study_name=study_name):
        return True
    query = (
        select(func.count())
        .select_from(ConfirmationRun)
        .join(StudyJob, StudyJob.id == ConfirmationRun.job_id)
        .where(ConfirmationRun.current.is_(True), ConfirmationRun.state.in_(("queued", "running")))
    )
    if study_name is not None:
        query = query.where(StudyJob.study_name == study_name)
    return bool(session.scalar(query))


def run_counts(session: Session, job_id: int) -> dict[str, int]:
    """The job's current confirmation runs per state (every state present, zero included)."""
    query = (
        select(ConfirmationRun.state, func.count())
        .where(ConfirmationRun.job_id == job_id, ConfirmationRun.current.is_(True))
        .group_by(ConfirmationRun.state)
    )
    counts = dict.fromkeys(RUN_STATES, 0)
    counts.update({state: n for state, n in session.execute(query)})
    return counts


def current_runs(session: Session, job_id: int) -> list[ConfirmationRun]:
    """The runs of the job's latest confirmation, by trial and seed."""
    query = select(ConfirmationRun).where(ConfirmationRun.job_id == job_id, ConfirmationRun.current.is_(True))
    return list(session.scalars(query.order_by(ConfirmationRun.trial_number, ConfirmationRun.seed)))
