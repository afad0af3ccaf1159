"""The agent (or external target) who answered: ``agent``.

Revision ID: 0009_answering_agent
Revises: 0008_headers
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_answering_agent"
down_revision: str | Sequence[str] | None = "0008_headers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("agent", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("agent")
