"""Claims of scheduled report runs, so that several nodes sharing a store send each once.

Revision ID: 0005_report_runs
Revises: 0004_webhook_outbox
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_report_runs"
down_revision: str | Sequence[str] | None = "0004_webhook_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_runs",
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("run", sa.Text(), nullable=False),
        sa.Column("node", sa.Text()),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("schedule", "run", name="report_runs_pkey"),
    )


def downgrade() -> None:
    op.drop_table("report_runs")
