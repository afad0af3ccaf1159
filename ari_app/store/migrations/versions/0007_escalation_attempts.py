"""Each escalation attempt kept with the call, and the bot dialogs billed.

Revision ID: 0007_escalation_attempts
Revises: 0006_outbox_given_up
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_escalation_attempts"
down_revision: str | Sequence[str] | None = "0006_outbox_given_up"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = (
    # JSON list of {"target", "via", "queued_at", "result", "wait_seconds",
    # "agent_answered_at"}, one per time the caller was sent to a queue, in order
    ("escalations", sa.Text()),
    # how many bot dialogs of the call were answered (each one's time is in bot_seconds)
    ("bot_dialogs", sa.Integer()),
)


def upgrade() -> None:
    for name, type_ in NEW_COLUMNS:
        op.add_column("interactions", sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
