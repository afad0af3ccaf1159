"""Interaction records: one row per call, written at every state change.

The store is SQLAlchemy 2 Core over any database URL it supports; two are tested and
documented (docs/records.md):

- ``sqlite:///<path>`` (default ``<state dir>/interactions.sqlite3``), in WAL mode with
  ``synchronous=FULL``: every committed write survives a crash of the app (``kill -9``);
- ``postgresql+psycopg://user:password@host/db`` for several nodes sharing one store.
  ``postgresql://`` without a driver means psycopg 3 as well.

The schema belongs to Alembic (ari_app/store/schema.py): a store brings its database to
``head`` when it is opened (``migrate=True``), so the app upgrades the schema at start.
Engines and URLs: ari_app/store/engine.py.

Why a synchronous engine, and worker threads for the event loop: the app's call sessions
never write here directly. They hand changes to the single record writer
(ari_app/store/writer.py), which commits them in batches with ``write_batch`` in a worker
thread, so a slow database (a PostgreSQL round trip, an fsync) never stalls a call or the
event loop; ``write_batch`` is the one way records are written. The ``a*`` methods run the
readers in a thread for the rest of the app (reconciliation, reports); the plain methods
serve scripts, the CLI and reports. Reads return :class:`~ari_app.records.Record`. One engine
with a connection pool serves all; SQLite writers from several processes wait for each other
(busy timeout).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ari_app.config import mask_url
from ari_app.outcomes import OUTCOMES
from ari_app.records import FIELDS, Record, RecordChange
from ari_app.store import outbox
from ari_app.store.engine import database_url, make_engine
from ari_app.store.schema import (
    MIGRATING,
    alembic_config,
    current_revisions,
    head_revisions,
    interactions,
    lock_for_migration,
    metadata,
    report_runs,
    webhook_outbox,
)

__all__ = [
    "COLUMNS",
    "InteractionStore",
    "StoreError",
    "StoreNotReady",
    "alembic_config",
    "database_url",
    "head_revisions",
    "lock_for_migration",
    "make_engine",
    "metadata",
    "open_existing_store",
    "open_store",
]

if TYPE_CHECKING:
    from ari_app.config import Config

log = logging.getLogger(__name__)

# what a failing database raises through the store (connection lost, disk full...)
StoreError = SQLAlchemyError
# the columns a record change may set (interaction_id and updated_at are the store's)
COLUMNS = FIELDS


class InteractionStore:
    """The ``interactions`` table behind a small API: one write (``write_batch``, the record
    writer's), reads and the webhook outbox.

    ``url`` is a database URL or a SQLite file path. ``node`` names the app instance that
    writes new records (``write_batch`` fills it in); reconciliation only touches its own
    node's records. Reading methods return :class:`~ari_app.records.Record` dicts, with
    ``context`` decoded from ``context_json`` when present.
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
        with MIGRATING, self.engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with MIGRATING, self.engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)

    def revision(self) -> tuple[str, ...]:
        with self.engine.connect() as connection:
            return current_revisions(connection)

    # -- writes ----------------------------------------------------------------------------

    def write_batch(
        self,
        creates: Mapping[str, RecordChange],
        updates: Mapping[str, RecordChange],
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
                    iid: outcome
                    for batch in (creates, updates)
                    for iid, fields in batch.items()
                    if (outcome := fields.get("outcome")) is not None
                    and outcome in webhook_outcomes
                }
                if events:
                    self._enqueue_events(db, events, webhook_urls, now)

    def _enqueue_events(
        self, db: Connection, events: Mapping[str, str], urls: Sequence[str], now: float
    ) -> None:
        """Outbox rows for ``events`` (interaction id -> outcome), once per event id and URL."""
        records = {
            row["interaction_id"]: cast(Record, dict(row))
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

    def get(self, interaction_id: str) -> Record | None:
        query = select(interactions).where(interactions.c.interaction_id == interaction_id)
        rows = self._rows(query)
        return rows[0] if rows else None

    def open_interactions(
        self, node: str | None = None, *, include_unowned: bool = False
    ) -> list[Record]:
        """Records without ``ended_at``; of one ``node`` if given (and of none, if asked)."""
        query = select(interactions).where(interactions.c.ended_at.is_(None))
        if node is not None:
            mine = interactions.c.node == node
            query = query.where(
                or_(mine, interactions.c.node.is_(None)) if include_unowned else mine
            )
        return self._rows(query.order_by(interactions.c.started_at))

    def all(self) -> list[Record]:
        return self._rows(select(interactions).order_by(interactions.c.started_at))

    def between(self, start_ts: float, end_ts: float) -> list[Record]:
        """Records that started in ``[start_ts, end_ts)`` (Unix seconds), oldest first."""
        query = (
            select(interactions)
            .where(interactions.c.started_at >= start_ts, interactions.c.started_at < end_ts)
            .order_by(interactions.c.started_at, interactions.c.interaction_id)
        )
        return self._rows(query)

    # -- the same, off the event loop --------------------------------------------------------

    async def aget(self, interaction_id: str) -> Record | None:
        return await asyncio.to_thread(self.get, interaction_id)

    async def aopen_interactions(
        self, node: str | None = None, *, include_unowned: bool = False
    ) -> list[Record]:
        return await asyncio.to_thread(
            functools.partial(self.open_interactions, node, include_unowned=include_unowned)
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.dispose()

    # -- helpers ---------------------------------------------------------------------------

    def _rows(self, query: Any) -> list[Record]:
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


def _dialect_insert(db: Connection, table: Table) -> Any:
    """The INSERT of ``db``'s dialect, which has ``on_conflict_do_update``/``_nothing``."""
    if db.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def _decode(row: Mapping[Any, Any]) -> Record:
    record = cast(Record, dict(row))
    context_json = record.get("context_json")
    if context_json:
        record["context"] = json.loads(context_json)
    return record
