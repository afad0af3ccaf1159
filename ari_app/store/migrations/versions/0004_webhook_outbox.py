"""The webhook outbox: one row per interaction event and URL, until it is delivered.

Revision ID: 0004_webhook_outbox
Revises: 0003_bot_choice
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_webhook_outbox"
down_revision: str | Sequence[str] | None = "0003_bot_choice"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("url", sa.Text(), primary_key=True),
        sa.Column("interaction_id", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float()),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("webhook_outbox_due", "webhook_outbox", ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("webhook_outbox_due", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
