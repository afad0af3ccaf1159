"""The store's tables as the migrations leave them at head, and the Alembic plumbing.

The schema belongs to Alembic: the migrations ship in ``ari_app/store/migrations`` (tests
compare them with the tables here). Concurrent upgrades of one database are serialised:
PostgreSQL with an advisory lock, SQLite with its write lock (:func:`lock_for_migration`).
The ``interactions`` columns are the record's fields (ari_app/records).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Connection

MIGRATIONS = "ari_app.store:migrations"
# key of the PostgreSQL advisory lock that serialises schema upgrades of one database
MIGRATION_LOCK_KEY = 0x626F7462  # "botb"
# Alembic's migration context is process-global: one upgrade at a time per process (other
# processes wait on the database's lock, see lock_for_migration)
MIGRATING = threading.Lock()

metadata = MetaData()

# The table as the migrations leave it at head (tests compare the two). Timestamps are Unix
# epoch seconds (float); docs/records.md describes every column.
interactions = Table(
    "interactions",
    metadata,
    Column("interaction_id", Text, primary_key=True),
    Column("node", Text),
    Column("state", Text, nullable=False),
    Column("outcome", Text),
    Column("profile", Text, nullable=False),
    Column("dialled_number", Text),
    Column("caller_number", Text),
    Column("caller_channel", Text, nullable=False),
    Column("bot_channel", Text),
    Column("agent_channel", Text),
    Column("availability", Text),
    Column("escalate_to", Text),
    Column("queue", Text),
    Column("context_json", Text),
    Column("error_reason", Text),
    Column("started_at", Float, nullable=False),
    Column("bot_answered_at", Float),
    Column("transfer_at", Float),
    Column("queued_at", Float),
    Column("agent_answered_at", Float),
    Column("bot_ended_at", Float),
    Column("ended_at", Float),
    Column("reconciled_at", Float),
    Column("bot_seconds", Float),
    Column("billable_minutes", Float),
    Column("billing_rounding", Text),
    Column("bot_uri", Text),
    Column("bots_tried", Text),
    Column("escalations", Text),
    Column("bot_dialogs", Integer),
    Column("verstat", Text),
    Column("bot_headers", Text),
    Column("agent", Text),
    Column("updated_at", Float, nullable=False),
    Index("interactions_started", "started_at"),
    Index("interactions_open", "ended_at"),
)

# Interaction events waiting for (or done with) delivery to the webhook URLs: one row per
# event and URL, written in the same transaction as the record change that made the event
# (write_batch), read and updated by the webhook sender (ari_app/reporting/webhooks.py).
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("url", Text, primary_key=True),
    Column("interaction_id", Text, nullable=False),
    Column("event", Text, nullable=False),  # the outcome that made it
    Column("body", Text, nullable=False),  # the JSON posted, byte for byte
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("last_error", Text),
    Column("given_up_at", Float),  # the last attempt allowed failed: no longer polled
    # the sender's poll: only rows still to deliver (delivered and given-up rows leave it)
    Index(
        "webhook_outbox_due",
        "next_attempt_at",
        sqlite_where=text("delivered_at IS NULL AND given_up_at IS NULL"),
        postgresql_where=text("delivered_at IS NULL AND given_up_at IS NULL"),
    ),
)

# One row per scheduled report run that some node claimed: several nodes sharing a store run
# the same [[report_schedules]], and the first to insert (schedule, run) sends the email; the
# others find the key taken (docs/scaling.md). run = the minute it fired, ISO 8601.
report_runs = Table(
    "report_runs",
    metadata,
    Column("schedule", Text, nullable=False),
    Column("run", Text, nullable=False),
    Column("node", Text),
    Column("claimed_at", Float, nullable=False),
    PrimaryKeyConstraint("schedule", "run", name="report_runs_pkey"),
)


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic config for the shipped migrations, running on ``connection``."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revisions() -> tuple[str, ...]:
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def current_revisions(connection: Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def lock_for_migration(connection: Connection) -> None:
    """Serialise schema upgrades of one database; held until the upgrade commits.

    PostgreSQL: a transaction-level advisory lock. SQLite: the database's write lock, taken
    before Alembic reads the current version, so a second process waits, then finds the
    schema at head.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        dbapi = connection.connection.dbapi_connection
        if dbapi is not None and not dbapi.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
