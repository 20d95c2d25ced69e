"""Confirmation runs: a study's chosen configurations trained again over several seeds and judged on held-out data;
the job records how many seeds and configurations to confirm, and whether a confirmation waits to be queued.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN on every backend: SQLite's batch mode would copy study_jobs into a new table
    # and drop the old one, and dropping it deletes every row that references a job (ON DELETE CASCADE).
    op.add_column("study_jobs", sa.Column("confirm_seeds", sa.Integer(), nullable=False, server_default="3"))
    op.add_column("study_jobs", sa.Column("confirm_top", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("study_jobs", sa.Column("confirm_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "confirmation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("split", sa.String(16), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_confirmation_runs"),
        sa.UniqueConstraint("job_id", "trial_number", "seed", name="uq_confirmation_runs_job_id_trial_number_seed"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["study_jobs.id"], name="fk_confirmation_runs_job_id_study_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_confirmation_runs_state_current", "confirmation_runs", ["state", "current"])


def downgrade() -> None:
    op.drop_index("ix_confirmation_runs_state_current", table_name="confirmation_runs")
    op.drop_table("confirmation_runs")
    for column in ("confirm_pending", "confirm_top", "confirm_seeds"):  # ALTER TABLE ... DROP COLUMN, as above
        op.drop_column("study_jobs", column)
