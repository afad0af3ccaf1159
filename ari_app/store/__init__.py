"""Interaction records: one row per call, written at every state change.

The store is SQLAlchemy 2 Core over any database URL it supports; two are tested and
documented (docs/records.md):

- ``sqlite:///<path>`` (default ``<state dir>/interactions.sqlite3``), in WAL mode with
  ``synchronous=FULL``: every committed write survives a crash of the app (``kill -9``);
- ``postgresql+psycopg://user:password@host/db`` for several nodes sharing one store.
  ``postgresql://`` without a driver means psycopg 3 as well.

The schema belongs to Alembic: the migrations ship in ``ari_app/store/migrations`` and a store
brings its database to ``head`` when it is opened (``migrate=True``), so the app upgrades
the schema at start. Concurrent upgrades of one PostgreSQL database are serialised with an
advisory lock.

Why a synchronous engine, and worker threads for the event loop: the app's call sessions
never write here directly. They hand changes to the single record writer
(ari_app/store/writer.py), which commits them in batches with ``write_batch`` in a worker
thread, so a slow database (a PostgreSQL round trip, an fsync) never stalls a call or the
event loop. The ``a*`` methods run the plain ones in a thread for the rest of the app
(reconciliation, reports); the plain methods serve scripts, the CLI and reports. One engine
with a connection pool serves all; SQLite writers from several processes wait for each other
(busy timeout).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ari_app.config import mask_url
from ari_app.outcomes import OUTCOMES
from ari_app.store import outbox

if TYPE_CHECKING:
    from ari_app.config import Config

log = logging.getLogger(__name__)

# what a failing database raises through the store (connection lost, disk full...)
StoreError = SQLAlchemyError
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# pause between attempts to switch a new SQLite database to WAL while another connection has it
SQLITE_WAL_RETRY_SECONDS = 0.05
MIGRATIONS = "ari_app.store:migrations"
# key of the PostgreSQL advisory lock that serialises schema upgrades of one database
MIGRATION_LOCK_KEY = 0x626F7462  # "botb"
# Alembic's migration context is process-global: one upgrade at a time per process (other
# processes wait on the database's lock, see lock_for_migration)
_MIGRATING = threading.Lock()

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

# the columns create() and update() accept (interaction_id and updated_at are the store's)
COLUMNS = frozenset(c.name for c in interactions.columns) - {"interaction_id", "updated_at"}


def database_url(value: str | Path | URL) -> URL:
    """A SQLAlchemy URL from a URL or a plain SQLite file path (``":memory:"`` too)."""
    if isinstance(value, URL):
        url = value
    elif isinstance(value, Path) or "://" not in value:
        path = str(value)
        url = make_url("sqlite://" if path == ":memory:" else f"sqlite:///{Path(path).resolve()}")
    else:
        url = make_url(value)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


# errors never show the bound parameters (caller numbers, bot context): they reach the logs
HIDE_PARAMETERS = True


def make_engine(url: URL) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with a busy timeout, or a pooled server."""
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                hide_parameters=HIDE_PARAMETERS,
            )
        else:  # one shared in-memory database for every thread
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False},
                poolclass=StaticPool,
                hide_parameters=HIDE_PARAMETERS,
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=HIDE_PARAMETERS
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] not in {"memory", "wal"}:
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """PRAGMA journal_mode=WAL, retried: the switch needs the database to itself, and SQLite
    answers "database is locked" at once (no busy timeout) while another connection, e.g.
    a second node's first start, holds it."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(SQLITE_WAL_RETRY_SECONDS)


class InteractionStore:
    """The ``interactions`` table behind a small API: create, update, get and queries.

    ``url`` is a database URL or a SQLite file path. ``node`` names the app instance that
    writes new records (``create`` fills it in); reconciliation only touches its own node's
    records. Reading methods return plain dicts, with ``context`` decoded from
    ``context_json`` when present.
    """

    def __init__(
        self, url: str | Path | URL, *, node: str | None = None, migrate: bool = True
    ) -> None:
        self.url = database_url(url)
        self.node = node
        self.engine = make_engine(self.url)
        self.path = Path(self.url.database or "") if self.dialect == "sqlite" else None
        self._closed = False
        if migrate:
            self.upgrade()

    def __repr__(self) -> str:
        return f"InteractionStore({mask_url(self.url.render_as_string(hide_password=False))!r})"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    # -- schema ----------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision`` (a no-op when already there)."""
        with self.engine.begin() as connection:
            if revision == "head" and current_revisions(connection) == head_revisions():
                return
        from alembic import command

        log.info("interaction store %r: migrating the schema to %s", self, revision)
        with _MIGRATING, self.engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with _MIGRATING, self.engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)

    def revision(self) -> tuple[str, ...]:
        with self.engine.connect() as connection:
            return current_revisions(connection)

    # -- writes ----------------------------------------------------------------------------

    def create(self, interaction_id: str, **fields: Any) -> None:
        now = time.time()
        fields.setdefault("started_at", now)
        fields.setdefault("state", "started")
        if self.node is not None:
            fields.setdefault("node", self.node)
        self.check_fields(fields)
        values = {k: _encode(v) for k, v in fields.items()}
        with self.engine.begin() as db:
            db.execute(
                insert(interactions).values(interaction_id=interaction_id, updated_at=now, **values)
            )

    def update(self, interaction_id: str, **fields: Any) -> None:
        """Set ``fields`` on one record; a record that does not exist is left alone."""
        self.check_fields(fields)
        values = {k: _encode(v) for k, v in fields.items()}
        with self.engine.begin() as db:
            db.execute(
                update(interactions)
                .where(interactions.c.interaction_id == interaction_id)
                .values(updated_at=time.time(), **values)
            )

    def write_batch(
        self,
        creates: Mapping[str, Mapping[str, Any]],
        updates: Mapping[str, Mapping[str, Any]],
        *,
        webhook_urls: Sequence[str] = (),
        webhook_outcomes: Sequence[str] = (),
    ) -> None:
        """Create and update many records in one transaction (the record writer's batches).

        Idempotent, so a batch may be written again after a failure whose outcome was unknown
        (a COMMIT that succeeded while the connection dropped): a create is an insert-or-update
        by interaction id (``ON CONFLICT DO UPDATE`` of the fields it names; the defaults
        ``started_at``, ``state`` and ``node`` are not reapplied to an existing row), an
        update sets values, and a webhook event already in the outbox is left as it is
        (``ON CONFLICT DO NOTHING``). Rows that change the same columns go to the database as
        one executemany. A change that sets an outcome in ``webhook_outcomes`` also puts its
        event into the webhook outbox, one row per URL, in the same transaction. All or
        nothing: when it raises, nothing of the batch was written.
        """
        now = time.time()
        inserts: dict[tuple[frozenset[str], frozenset[str]], list[dict[str, Any]]] = {}
        for interaction_id, fields in creates.items():
            values = {"started_at": now, "state": "started", **fields}
            if self.node is not None:
                values.setdefault("node", self.node)
            row = {k: _encode(v) for k, v in values.items()}
            row.update(interaction_id=interaction_id, updated_at=now)
            key = (frozenset(row), frozenset(fields) | {"updated_at"})
            inserts.setdefault(key, []).append(row)
        changes: dict[frozenset[str], list[dict[str, Any]]] = {}
        for interaction_id, fields in updates.items():
            row = {k: _encode(v) for k, v in fields.items()}
            row["updated_at"] = now
            changes.setdefault(frozenset(row), []).append({**row, "_iid": interaction_id})
        with self.engine.begin() as db:
            for (_, named), rows in inserts.items():
                upsert = _dialect_insert(db, interactions)
                db.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[interactions.c.interaction_id],
                        set_={name: upsert.excluded[name] for name in sorted(named)},
                    ),
                    rows,
                )
            for columns, rows in changes.items():
                statement = (
                    update(interactions)
                    .where(interactions.c.interaction_id == bindparam("_iid"))
                    .values({name: bindparam(name) for name in columns})
                )
                db.execute(statement, rows)
            if webhook_urls:
                events = {
                    iid: fields["outcome"]
                    for batch in (creates, updates)
                    for iid, fields in batch.items()
                    if fields.get("outcome") in webhook_outcomes
                }
                if events:
                    self._enqueue_events(db, events, webhook_urls, now)

    def _enqueue_events(
        self, db: Connection, events: Mapping[str, str], urls: Sequence[str], now: float
    ) -> None:
        """Outbox rows for ``events`` (interaction id -> outcome), once per event id and URL."""
        records = {
            row["interaction_id"]: dict(row)
            for row in db.execute(
                select(interactions).where(interactions.c.interaction_id.in_(list(events)))
            ).mappings()
        }
        rows = []
        for iid, outcome in events.items():
            record = records.get(iid)
            if record is None:  # an update of a record that does not exist changes nothing
                continue
            body = outbox.event_body(record, outcome, now)
            for url in urls:
                rows.append(
                    {
                        "event_id": outbox.event_id(iid, outcome),
                        "url": url,
                        "interaction_id": iid,
                        "event": outcome,
                        "body": body,
                        "created_at": now,
                        "attempts": 0,
                        "next_attempt_at": now,
                    }
                )
        if rows:
            statement = _dialect_insert(db, webhook_outbox).on_conflict_do_nothing(
                index_elements=[webhook_outbox.c.event_id, webhook_outbox.c.url]
            )
            db.execute(statement, rows)

    # -- the webhook outbox ------------------------------------------------------------------

    def due_webhooks(self, now: float, max_attempts: int, limit: int) -> list[dict[str, Any]]:
        """Undelivered events whose next attempt is due, oldest first."""
        query = (
            select(webhook_outbox)
            .where(
                webhook_outbox.c.delivered_at.is_(None),
                webhook_outbox.c.given_up_at.is_(None),
                webhook_outbox.c.next_attempt_at <= now,
                webhook_outbox.c.attempts < max_attempts,
            )
            .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as db:
            return [dict(row) for row in db.execute(query).mappings()]

    def claim_webhook(self, event_id: str, url: str, now: float, until: float) -> bool:
        """Take one due event for delivery until ``until``: False if another sender has it.

        Several nodes sharing a store each run a sender; the claim (moving its next attempt
        past the delivery's time-out) lets exactly one of them send it at a time.
        """
        with self.engine.begin() as db:
            result = db.execute(
                update(webhook_outbox)
                .where(
                    webhook_outbox.c.event_id == event_id,
                    webhook_outbox.c.url == url,
                    webhook_outbox.c.delivered_at.is_(None),
                    webhook_outbox.c.next_attempt_at <= now,
                )
                .values(next_attempt_at=until)
            )
            return bool(result.rowcount)

    def webhook_attempted(
        self,
        event_id: str,
        url: str,
        *,
        attempts: int,
        delivered_at: float | None,
        next_attempt_at: float,
        error: str | None,
        given_up: bool = False,
    ) -> None:
        """Record one delivery attempt; ``given_up`` (the last allowed attempt failed) takes the
        row out of the sender's poll (``given_up_at``)."""
        with self.engine.begin() as db:
            db.execute(
                update(webhook_outbox)
                .where(webhook_outbox.c.event_id == event_id, webhook_outbox.c.url == url)
                .values(
                    attempts=attempts,
                    delivered_at=delivered_at,
                    next_attempt_at=next_attempt_at,
                    last_error=error,
                    given_up_at=time.time() if given_up else None,
                )
            )

    def webhook_events(self) -> list[dict[str, Any]]:
        """Every outbox row, oldest first (tests, the CLI)."""
        query = select(webhook_outbox).order_by(
            webhook_outbox.c.created_at, webhook_outbox.c.event_id, webhook_outbox.c.url
        )
        with self.engine.connect() as db:
            return [dict(row) for row in db.execute(query).mappings()]

    def webhook_backlog(self, max_attempts: int) -> int:
        """Events not yet delivered and not given up."""
        query = (
            select(func.count())
            .select_from(webhook_outbox)
            .where(
                webhook_outbox.c.delivered_at.is_(None),
                webhook_outbox.c.attempts < max_attempts,
            )
        )
        with self.engine.connect() as db:
            return int(db.execute(query).scalar_one())

    def claim_report_run(self, schedule: str, run: str) -> bool:
        """Claim one run of a report schedule for this node; False if a node already did."""
        try:
            with self.engine.begin() as db:
                db.execute(
                    insert(report_runs).values(
                        schedule=schedule, run=run, node=self.node, claimed_at=time.time()
                    )
                )
        except IntegrityError:
            return False
        return True

    def report_run_claims(self) -> list[dict[str, Any]]:
        query = select(report_runs).order_by(report_runs.c.claimed_at)
        with self.engine.connect() as db:
            return [dict(row._mapping) for row in db.execute(query)]

    def ping(self) -> None:
        """One trivial query: raises StoreError when the database does not answer."""
        with self.engine.connect() as db:
            db.execute(text("SELECT 1"))

    # -- reads -----------------------------------------------------------------------------

    def get(self, interaction_id: str) -> dict[str, Any] | None:
        query = select(interactions).where(interactions.c.interaction_id == interaction_id)
        rows = self._rows(query)
        return rows[0] if rows else None

    def open_interactions(
        self, node: str | None = None, *, include_unowned: bool = False
    ) -> list[dict[str, Any]]:
        """Records without ``ended_at``; of one ``node`` if given (and of none, if asked)."""
        query = select(interactions).where(interactions.c.ended_at.is_(None))
        if node is not None:
            mine = interactions.c.node == node
            query = query.where(
                or_(mine, interactions.c.node.is_(None)) if include_unowned else mine
            )
        return self._rows(query.order_by(interactions.c.started_at))

    def all(self) -> list[dict[str, Any]]:
        return self._rows(select(interactions).order_by(interactions.c.started_at))

    def between(self, start_ts: float, end_ts: float) -> list[dict[str, Any]]:
        """Records that started in ``[start_ts, end_ts)`` (Unix seconds), oldest first."""
        query = (
            select(interactions)
            .where(interactions.c.started_at >= start_ts, interactions.c.started_at < end_ts)
            .order_by(interactions.c.started_at, interactions.c.interaction_id)
        )
        return self._rows(query)

    # -- the same, off the event loop --------------------------------------------------------

    async def acreate(self, interaction_id: str, **fields: Any) -> None:
        await asyncio.to_thread(functools.partial(self.create, interaction_id, **fields))

    async def aupdate(self, interaction_id: str, **fields: Any) -> None:
        await asyncio.to_thread(functools.partial(self.update, interaction_id, **fields))

    async def aget(self, interaction_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get, interaction_id)

    async def aopen_interactions(
        self, node: str | None = None, *, include_unowned: bool = False
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(
            functools.partial(self.open_interactions, node, include_unowned=include_unowned)
        )

    async def abetween(self, start_ts: float, end_ts: float) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.between, start_ts, end_ts)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.dispose()

    # -- helpers ---------------------------------------------------------------------------

    def _rows(self, query: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            return [_decode(row._mapping) for row in db.execute(query)]

    @staticmethod
    def check_fields(fields: Mapping[str, Any]) -> None:
        """Raise KeyError/ValueError for unknown columns or outcomes (before anything queues)."""
        unknown = set(fields) - COLUMNS
        if unknown:
            raise KeyError(f"unknown interaction fields: {sorted(unknown)}")
        outcome = fields.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")


def open_store(config: Config, *, migrate: bool = True) -> InteractionStore:
    """The store ``config`` names (``[store] url``, else the SQLite file), for its node."""
    return InteractionStore(config.store.url, node=config.store.node, migrate=migrate)


class StoreNotReady(Exception):
    """A reader found no store, or one at another schema revision; the message says what to do."""


def open_existing_store(config: Config) -> InteractionStore:
    """The store ``config`` names, for reading only: never created, never migrated.

    A missing SQLite file, or a database whose schema is not at this version's head, raises
    :class:`StoreNotReady` (``ari-app run`` and ``ari-app db upgrade`` create and upgrade).
    """
    url = database_url(config.store.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database or "")
        if not path.exists():
            raise StoreNotReady(
                f"no interaction store at {path}: `ari-app run` creates it with the first "
                "call, `ari-app db upgrade` creates an empty one"
            )
    store = InteractionStore(url, node=config.store.node, migrate=False)
    try:
        current = store.revision()
    except Exception:
        store.close()
        raise
    if current != head_revisions():
        store.close()
        shown = mask_url(store.url.render_as_string(hide_password=False))
        raise StoreNotReady(
            f"interaction store {shown} is at schema "
            f"revision {', '.join(current) or '(none)'}, this version reads "
            f"{', '.join(head_revisions())}: run `ari-app db upgrade`"
        )
    return store


# -- Alembic ---------------------------------------------------------------------------------


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


def _dialect_insert(db: Connection, table: Table) -> Any:
    """The INSERT of ``db``'s dialect, which has ``on_conflict_do_update``/``_nothing``."""
    if db.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def _decode(row: Mapping[Any, Any]) -> dict[str, Any]:
    record = dict(row)
    if record.get("context_json"):
        record["context"] = json.loads(record["context_json"])
    return record


def record_columns() -> Sequence[str]:
    """Column names in table order (for exports)."""
    return [c.name for c in interactions.columns]
