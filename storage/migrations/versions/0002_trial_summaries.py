"""Trial summaries: one row per finished trial, for paginated trial lists.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trial_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("objective", sa.Float(), nullable=True),
        sa.Column("values", sa.JSON(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("task_metrics", sa.JSON(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trial_summaries"),
        sa.UniqueConstraint("job_id", "trial_number", name="uq_trial_summaries_job_id_trial_number"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["study_jobs.id"], name="fk_trial_summaries_job_id_study_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_trial_summaries_job_id_state", "trial_summaries", ["job_id", "state"])
    op.create_index("ix_trial_summaries_job_id_objective", "trial_summaries", ["job_id", "objective"])


def downgrade() -> None:
    op.drop_index("ix_trial_summaries_job_id_objective", table_name="trial_summaries")
    op.drop_index("ix_trial_summaries_job_id_state", table_name="trial_summaries")
    op.drop_table("trial_summaries")
