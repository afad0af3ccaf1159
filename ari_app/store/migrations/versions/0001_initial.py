"""The interactions table as the first store (stdlib sqlite3) created it.

A database made by that store already has the table (and no Alembic version): it is
adopted as it is, so upgrading keeps every record.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("interactions"):
        return
    op.create_table(
        "interactions",
        sa.Column("interaction_id", sa.Text(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text()),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("dialled_number", sa.Text()),
        sa.Column("caller_number", sa.Text()),
        sa.Column("caller_channel", sa.Text(), nullable=False),
        sa.Column("bot_channel", sa.Text()),
        sa.Column("availability", sa.Text()),
        sa.Column("escalate_to", sa.Text()),
        sa.Column("queue", sa.Text()),
        sa.Column("context_json", sa.Text()),
        sa.Column("error_reason", sa.Text()),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("bot_answered_at", sa.Float()),
        sa.Column("transfer_at", sa.Float()),
        sa.Column("queued_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("interactions_started", "interactions", ["started_at"])


def downgrade() -> None:
    op.drop_index("interactions_started", table_name="interactions")
    op.drop_table("interactions")
