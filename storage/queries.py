"""Read queries shared by the CLI and the API: small, indexed, never a scan of every Optuna trial."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.claims import claim_counts
from storage.confirmations import run_counts
from storage.jobs import get_job
from storage.models import TrialSummary

#: The Optuna user attribute that marks a study's baseline trial (equal weighting, default learning rates).
BASELINE_ATTR = "baseline"


@dataclass(frozen=True)
class StudyProgress:
    study_name: str
    problem: str
    objective: str
    status: str
    n_trials: int
    running: int
    complete: int
    pruned: int
    failed: int
    best_value: float | None  # scalar studies only: the best first objective value of a complete trial
    last_error: str | None
    confirm_pending: bool = False  # a confirmation was asked for and its runs are not queued yet
    confirm_runs: dict[str, int] | None = None  # the current confirmation runs per state
    interrupted: int = 0  # ended by a worker's interrupt or a stop request: not failures

    @property
    def confirming(self) -> bool:
        """A confirmation waits to be queued or has runs not finished yet."""
        runs = self.confirm_runs or {}
        return self.confirm_pending or bool(runs.get("queued") or runs.get("running"))


def study_progress(session: Session, study_name: str) -> StudyProgress:
    """Where the job stands; raises ``StudyNotFound``."""
    job = get_job(session, study_name)
    counts = claim_counts(session, study_name)
    best = None
    if job.objective != "pareto":
        pick = func.max if job.directions[0] == "maximize" else func.min
        query = select(pick(TrialSummary.objective)).where(
            TrialSummary.job_id == job.id, TrialSummary.state == "complete"
        )
        best = session.scalar(query)
    return StudyProgress(
        study_name=job.study_name, problem=job.problem, objective=job.objective, status=job.status,
        n_trials=job.n_trials, running=counts["running"], complete=counts["complete"], pruned=counts["pruned"],
        failed=counts["failed"], best_value=best, last_error=job.last_error, confirm_pending=job.confirm_pending,
        confirm_runs=run_counts(session, job.id), interrupted=counts["interrupted"],
    )  # fmt: skip
