"""Study jobs, trial-slot claims and per-epoch per-task metrics.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _job_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["job_id"], ["study_jobs.id"], name=f"fk_{table}_job_id_study_jobs", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "study_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(64), nullable=False),
        sa.Column("problem", sa.String(128), nullable=False),
        sa.Column("problem_options", sa.JSON(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=True),
        sa.Column("objective", sa.String(16), nullable=False),
        sa.Column("directions", sa.JSON(), nullable=False),
        sa.Column("sampler", sa.String(64), nullable=False),
        sa.Column("pruner", sa.String(64), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_study_jobs"),
        sa.UniqueConstraint("study_name", name="uq_study_jobs_study_name"),
    )
    op.create_index("ix_study_jobs_status", "study_jobs", ["status"])
    op.create_table(
        "trial_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trial_claims"),
        _job_fk("trial_claims"),
    )
    op.create_index("ix_trial_claims_job_id_state", "trial_claims", ["job_id", "state"])
    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=False),
        sa.Column("metric", sa.Float(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("sigma", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_epoch_metrics"),
        sa.UniqueConstraint(
            "job_id", "trial_number", "epoch", "task", name="uq_epoch_metrics_job_id_trial_number_epoch_task"
        ),
        _job_fk("epoch_metrics"),
    )


def downgrade() -> None:
    op.drop_table("epoch_metrics")
    op.drop_index("ix_trial_claims_job_id_state", table_name="trial_claims")
    op.drop_table("trial_claims")
    op.drop_index("ix_study_jobs_status", table_name="study_jobs")
    op.drop_table("study_jobs")
