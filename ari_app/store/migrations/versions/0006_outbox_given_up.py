"""Given-up webhook events leave the sender's poll: ``given_up_at`` and a partial index.

Revision ID: 0006_outbox_given_up
Revises: 0005_report_runs
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_outbox_given_up"
down_revision: str | Sequence[str] | None = "0005_report_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "delivered_at IS NULL AND given_up_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("webhook_outbox") as batch:
        batch.add_column(sa.Column("given_up_at", sa.Float()))
    op.drop_index("webhook_outbox_due", table_name="webhook_outbox")
    op.create_index(
        "webhook_outbox_due",
        "webhook_outbox",
        ["next_attempt_at"],
        sqlite_where=sa.text(DUE),
        postgresql_where=sa.text(DUE),
    )


def downgrade() -> None:
    op.drop_index("webhook_outbox_due", table_name="webhook_outbox")
    op.create_index("webhook_outbox_due", "webhook_outbox", ["delivered_at", "next_attempt_at"])
    with op.batch_alter_table("webhook_outbox") as batch:
        batch.drop_column("given_up_at")
