"""Which bot took the call and which were tried (several bots per profile).

Revision ID: 0003_bot_choice
Revises: 0002_record_fields
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_bot_choice"
down_revision: str | Sequence[str] | None = "0002_record_fields"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = (
    ("bot_uri", sa.Text()),  # the bot URI that answered
    ("bots_tried", sa.Text()),  # JSON list of {"uri", "result"} in the order tried
)


def upgrade() -> None:
    for name, type_ in NEW_COLUMNS:
        op.add_column("interactions", sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
