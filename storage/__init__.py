"""Engines, sessions, Optuna storage and the project's own tables; the one place that builds them.

SQLite (the default ``sqlite:///mtl-tune.db``) serves processes on one machine; PostgreSQL
(``postgresql+psycopg://…``) serves workers on many. Nothing here imports torch.
"""

from __future__ import annotations

from storage._engine import (
    SchemaOutdated,
    StorageError,
    StorageUnavailable,
    StudyExists,
    StudyNotFound,
    default_url,
    dispose_engines,
    get_engine,
    normalize_url,
    redact,
    session_scope,
)
from storage._optuna import MAX_RETRY, optuna_storage, worker_storage
from storage._schema import current_revision, ensure_schema, head_revision, upgrade
from storage.claims import (
    CLAIM_STATES,
    attach_trial,
    claim_slot,
    finish_claim,
    heartbeat,
    jobs_needing_trials,
    reap_stale_claims,
)
from storage.jobs import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    create_job,
    delete_job,
    find_job,
    get_job,
    job_status,
    list_jobs,
    request_stop,
    resume,
    set_status,
)
from storage.metrics import write_epoch, write_summary
from storage.models import EpochMetric, StudyJob, TrialClaim, TrialSummary
from storage.queries import BASELINE_ATTR, StudyProgress, claim_counts, study_progress, trial_curves

__all__ = [
    "ACTIVE_STATUSES",
    "BASELINE_ATTR",
    "CLAIM_STATES",
    "JOB_STATUSES",
    "MAX_RETRY",
    "EpochMetric",
    "SchemaOutdated",
    "StorageError",
    "StorageUnavailable",
    "StudyExists",
    "StudyJob",
    "StudyNotFound",
    "StudyProgress",
    "TrialClaim",
    "TrialSummary",
    "attach_trial",
    "claim_counts",
    "claim_slot",
    "create_job",
    "current_revision",
    "default_url",
    "delete_job",
    "dispose_engines",
    "ensure_schema",
    "find_job",
    "finish_claim",
    "get_engine",
    "get_job",
    "head_revision",
    "heartbeat",
    "job_status",
    "jobs_needing_trials",
    "list_jobs",
    "normalize_url",
    "optuna_storage",
    "reap_stale_claims",
    "redact",
    "request_stop",
    "resume",
    "session_scope",
    "set_status",
    "study_progress",
    "trial_curves",
    "upgrade",
    "worker_storage",
    "write_epoch",
    "write_summary",
]
