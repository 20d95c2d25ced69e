"""Index trial summaries by duration, for trial lists sorted by duration.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trial_summaries_job_id_duration_s", "trial_summaries", ["job_id", "duration_s"])


def downgrade() -> None:
    op.drop_index("ix_trial_summaries_job_id_duration_s", table_name="trial_summaries")
