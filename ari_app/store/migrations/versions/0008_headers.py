"""Headers that travel: the carrier's caller verification (``verstat``) and the
bot's headers passed on to the agent (``bot_headers``, JSON) of each call.

Revision ID: 0008_headers
Revises: 0007_escalation_attempts
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_headers"
down_revision: str | Sequence[str] | None = "0007_escalation_attempts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = ("verstat", "bot_headers")


def upgrade() -> None:
    for name in NEW_COLUMNS:
        op.add_column("interactions", sa.Column(name, sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        for name in reversed(NEW_COLUMNS):
            batch.drop_column(name)
