"""Record fields of the full lifecycle: node, agent answer, bot end, billing, reconciliation.

Revision ID: 0002_record_fields
Revises: 0001_initial
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_record_fields"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = (
    ("node", sa.Text()),
    ("agent_channel", sa.Text()),
    ("agent_answered_at", sa.Float()),
    ("bot_ended_at", sa.Float()),
    ("reconciled_at", sa.Float()),
    ("bot_seconds", sa.Float()),
    ("billable_minutes", sa.Float()),
    ("billing_rounding", sa.Text()),
)


def upgrade() -> None:
    # plain ADD COLUMN (nullable, no default) works on SQLite and PostgreSQL alike and keeps
    # the rows; no table rebuild
    for name, type_ in NEW_COLUMNS:
        op.add_column("interactions", sa.Column(name, type_))
    op.create_index("interactions_open", "interactions", ["ended_at"])


def downgrade() -> None:
    op.drop_index("interactions_open", table_name="interactions")
    with op.batch_alter_table("interactions") as batch:
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
