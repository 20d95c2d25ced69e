"""Trial slots: workers claim one slot per trial, transactionally, so together they never overshoot a job's target.

A slot counts while its claim is complete or pruned, or running with a heartbeat newer than the grace period;
a failed or interrupted claim, or a running one whose worker went silent, frees its slot for another worker.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from storage._engine import write_lock, write_transaction
from storage.confirmations import mark_confirm_pending
from storage.jobs import ACTIVE_STATUSES, check_choice, running_claims
from storage.models import StudyJob, TrialClaim, utcnow

CLAIM_STATES = ("running", "complete", "pruned", "failed", "interrupted")
FINISHED_STATES = ("complete", "pruned")
# A trial ended by its worker's interrupt (Ctrl-C, SIGTERM, SIGHUP) or by a stop request: not a failure of the
# trial. It frees its slot as a failed one does, and is counted apart. Optuna has no such state: the trial is FAIL
# there, with this user attribute set to True next to its ``fail_reason``.
INTERRUPTED = "interrupted"
INTERRUPTED_ATTR = "interrupted"
# A claim whose worker went silent past the grace period (killed, out of memory, machine lost): counted as failed,
# and its trial is failed and retried (``storage.lost_trials``).
LOST = "lost"
# A job whose trials took this many workers down in a row (no trial finished in between) is failed with the reason:
# its trials would otherwise keep killing the workers every other study needs.
MAX_LOST_IN_A_ROW = 5


def _counted(cutoff: datetime) -> ColumnElement[bool]:
    live = and_(TrialClaim.state == "running", TrialClaim.heartbeat_at > cutoff)
    return or_(TrialClaim.state.in_(FINISHED_STATES), live)


def jobs_needing_trials(session: Session, *, study_name: str | None = None, grace_seconds: float) -> list[StudyJob]:
    """Queued or running jobs with fewer counted claims than their target, oldest first."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    counted = (
        select(func.count(TrialClaim.id)).where(TrialClaim.job_id == StudyJob.id, _counted(cutoff)).scalar_subquery()
    )
    query = select(StudyJob).where(StudyJob.status.in_(ACTIVE_STATUSES), counted < StudyJob.n_trials)
    if study_name is not None:
        query = query.where(StudyJob.study_name == study_name)
    return list(session.scalars(query.order_by(StudyJob.created_at, StudyJob.id)))


def claim_slot(url: str, *, study_name: str, worker: str, grace_seconds: float) -> int | None:
    """Claim one trial slot of the job in its own transaction; the claim id, or None when there is none to take.

    None also when the job is gone or not queued/running. The job row is locked first (``FOR UPDATE`` on
    PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) so concurrent claimers, in any process, are serialised; the
    counts are read by a later statement, whose snapshot then includes every claim committed before the lock.
    Core statements, not ORM objects: a worker claims before every trial.
    """
    with write_transaction(url) as connection:
        query = select(StudyJob.id, StudyJob.status, StudyJob.n_trials).where(StudyJob.study_name == study_name)
        job = connection.execute(query.with_for_update()).one_or_none()
        if job is None or job.status not in ACTIVE_STATUSES:
            return None
        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        finished, counted = connection.execute(
            select(
                func.count().filter(TrialClaim.state.in_(FINISHED_STATES)),
                func.count().filter(_counted(cutoff)),
            ).where(TrialClaim.job_id == job.id)
        ).one()
        if finished >= job.n_trials:
            _complete(connection, job.id)
            return None
        if counted >= job.n_trials:
            return None
        now = utcnow()
        values = {"job_id": job.id, "worker": worker, "state": "running", "claimed_at": now, "heartbeat_at": now}
        claim_id: int = connection.execute(insert(TrialClaim).values(values).returning(TrialClaim.id)).scalar_one()
        if job.status != "running":
            _set_job_status(connection, job.id, "running")
        return claim_id


def attach_trial(session: Session | Connection, claim_id: int, trial_number: int) -> None:
    """Record which Optuna trial the claim runs."""
    values = {"trial_number": trial_number, "heartbeat_at": utcnow()}
    session.execute(update(TrialClaim).where(TrialClaim.id == claim_id).values(values))


def heartbeat(session: Session, claim_id: int) -> None:
    """Keep the claim's slot: a running claim without a heartbeat for the grace period loses it."""
    session.execute(update(TrialClaim).where(TrialClaim.id == claim_id).values(heartbeat_at=utcnow()))


def finish_claim(session: Session | Connection, claim_id: int, *, state: str, missing_ok: bool = False) -> bool:
    """Close a claim as complete, pruned, failed or interrupted (a failed or interrupted claim frees its slot).

    A claim already complete or pruned never changes (a worker telling a trial twice cannot turn it failed); a
    failed one (reaped while its worker was silent) takes the state its trial ended in. The job becomes
    ``completed`` when its finished claims reach the target, and a ``stopping`` job becomes ``stopped`` once no
    claim of it is running. ``session`` may also be a connection in a transaction that already writes (a worker
    closes the claim in the transaction that tells Optuna the trial finished). Returns whether the claim exists:
    with ``missing_ok``, a claim deleted with its job is no error.
    """
    check_choice("state", state, CLAIM_STATES[1:])
    if isinstance(session, Session):
        write_lock(session)
    # Lock the job row as claim_slot does, so two finishing workers cannot both miss the last slot: the counts
    # below are read after the lock, by statements that see every claim committed before it.
    of_claim = select(TrialClaim.job_id).where(TrialClaim.id == claim_id).scalar_subquery()
    query = select(StudyJob.id, StudyJob.status, StudyJob.n_trials).where(StudyJob.id == of_claim).with_for_update()
    job = session.execute(query).one_or_none()
    if job is None:
        if missing_ok:  # deleted with its job
            return False
        raise ValueError(f"no trial claim with id {claim_id}")
    now = utcnow()
    still_open = TrialClaim.state.not_in(FINISHED_STATES)
    closed = update(TrialClaim).where(TrialClaim.id == claim_id, still_open)
    if session.execute(closed.values(state=state, finished_at=now, heartbeat_at=now)).rowcount != 1:  # type: ignore[attr-defined]
        return True  # already complete or pruned: nothing to count again
    if job.status in ("queued", "running", "stopping"):
        finished, running = session.execute(
            select(
                func.count().filter(TrialClaim.state.in_(FINISHED_STATES)),
                func.count().filter(TrialClaim.state == "running"),
            ).where(TrialClaim.job_id == job.id)
        ).one()
        if finished >= job.n_trials:
            _complete(session, job.id)
        elif job.status == "stopping" and not running:
            _set_job_status(session, job.id, "stopped")
    return True


def _complete(session: Session | Connection, job_id: int) -> None:
    """The job reached its target: completed, and its confirmation (when it asks for one) waits to be queued."""
    _set_job_status(session, job_id, "completed")
    mark_confirm_pending(session, job_id)


def _set_job_status(session: Session | Connection, job_id: int, status: str) -> None:
    session.execute(update(StudyJob).where(StudyJob.id == job_id).values(status=status))


def reap_stale_claims(session: Session, *, grace_seconds: float) -> int:
    """Mark lost the running claims whose worker went silent for ``grace_seconds`` (killed, machine lost); returns
    how many.

    Their slots were already free for ``claim_slot``; this makes counts truthful, lets a ``stopping`` job whose
    last running claims died become ``stopped`` and a ``running`` one with no live trial left ``queued``, and fails
    a job whose last ``MAX_LOST_IN_A_ROW`` trials were all lost, with the reason.
    """
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    stale = and_(TrialClaim.state == "running", TrialClaim.heartbeat_at <= cutoff)
    # Workers call this before every trial and there is rarely anything to do: look first, on a connection of
    # its own, and only then take the write lock (``BEGIN IMMEDIATE`` on SQLite).
    bind = session.get_bind()
    with (bind if isinstance(bind, Engine) else bind.engine).connect() as probe:
        if probe.scalar(select(TrialClaim.id).where(stale).limit(1)) is None:
            return 0
    write_lock(session)
    job_ids = set(session.scalars(select(TrialClaim.job_id).where(stale)))
    if not job_ids:
        return 0
    result = session.execute(update(TrialClaim).where(stale).values(state=LOST, finished_at=utcnow()))
    for job in session.scalars(select(StudyJob).where(StudyJob.id.in_(job_ids))):
        lost = _lost_in_a_row(session, job.id)
        if job.status in ("queued", "running") and len(lost) >= MAX_LOST_IN_A_ROW:
            job.status = "failed"
            trials = ", ".join(str(n) for n in lost if n is not None) or "none started"
            job.last_error = (
                f"{len(lost)} trials in a row lost their worker (killed, out of memory or crashed; trials {trials}); "
                f"resume the study once the cause is fixed"
            )
        elif not running_claims(session, job.id):
            job.status = {"stopping": "stopped", "running": "queued"}.get(job.status, job.status)
    return int(result.rowcount)  # type: ignore[attr-defined]


def _lost_in_a_row(session: Session, job_id: int) -> list[int | None]:
    """The trial numbers of the job's lost claims since its last finished one."""
    last_finished = (
        select(func.max(TrialClaim.finished_at))
        .where(TrialClaim.job_id == job_id, TrialClaim.state.in_(FINISHED_STATES))
        .scalar_subquery()
    )
    since = or_(last_finished.is_(None), TrialClaim.finished_at > last_finished)
    query = select(TrialClaim.trial_number).where(TrialClaim.job_id == job_id, TrialClaim.state == LOST, since)
    return list(session.scalars(query.order_by(TrialClaim.id)))


def counted_state(state: str) -> str:
    """The state a claim is counted in: a lost claim is a failed one."""
    return "failed" if state == LOST else state
