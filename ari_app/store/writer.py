"""The single writer of interaction records: batched, off the call path, never losing a change.

Call sessions hand their record changes to :class:`RecordWriter` without waiting
(``create``/``update`` are plain methods). Changes of one record are merged in memory; every
``flush_interval`` seconds (``[store] flush_interval_seconds``) the writer commits everything
pending in one transaction, in a worker thread, so no call ever waits for a disk write and
the database sees a few commits a second instead of one per state change.

What happens when a write fails (docs/records.md, "When the database fails"):

- Writes are idempotent (``InteractionStore.write_batch``: insert-or-update by interaction id,
  webhook events once), so a batch is simply written again, also after a COMMIT whose reply
  was lost with the connection.
- The database cannot be written (down, unreachable, disk full: an ``OperationalError``, or
  any error while a ping fails too): the batch goes to the local journal
  (ari_app/store/journal.py, ``[store] journal_path``, fsync'd, at most ``journal_max_bytes``)
  and memory is freed; while the journal holds anything, newer changes are appended behind
  them, and every attempt replays the journal first. ``start()`` replays a journal left by an
  earlier run before anything new is written. A full journal keeps changes in memory.
- The database answers but refuses the batch (a constraint, a value it cannot store): the batch
  is split in halves until the one refused change is isolated; it is set aside in the
  dead-letter file (``[store] dead_letter_path``), logged without its values and counted, and
  the rest is written.
- ``close()`` writes what is left; what it cannot write goes to the journal, and only what the
  journal refuses too is reported lost.

Durability: a change is on disk (database or journal) at most one flush interval (plus the
commit or the fsync) after it was made; a ``kill -9`` loses at most that window, and the next
start's reconciliation closes whatever it finds open (ari_app/calls/reconcile.py).

Webhook events (docs/webhooks.md) are written here too: a batch that sets an outcome named in
``[webhooks] outcomes`` puts the event into the webhook outbox in the same transaction as the
record change, so an event exists exactly when its record change does. The sender
(ari_app/reporting/webhooks.py) delivers from the outbox; no call waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from itertools import islice
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, OperationalError

from ari_app.config import StoreSettings, WebhookSettings
from ari_app.records import RecordChange
from ari_app.store import InteractionStore
from ari_app.store.journal import Change, DeadLetters, Journal, merge

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ari_app.config import Config

__all__ = ["DEFAULT_FLUSH_SECONDS", "RecordWriter", "writer_for"]

log = logging.getLogger(__name__)

DEFAULT_FLUSH_SECONDS = StoreSettings().flush_interval_seconds  # [store] flush_interval_seconds
# after a failed batch, wait this long before the next attempt (the database is down)
RETRY_SECONDS = 1.0
# records per transaction when the journal is replayed
REPLAY_BATCH_RECORDS = 1000
# [store] unwritable_after_seconds when the writer is built without a config (tests)
DEFAULT_UNWRITABLE_SECONDS = StoreSettings().unwritable_after_seconds


class Unavailable(Exception):
    """The database could not be written (as opposed to refusing a change's data)."""


def describe(exc: BaseException) -> str:
    """An error without the statement's parameters (caller numbers, bot context): its class,
    the driver's class, and for a connection or disk failure the driver's first line."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    if orig is None:
        return type(exc).__name__
    text = f"{type(exc).__name__} ({type(orig).__module__}.{type(orig).__name__})"
    if isinstance(exc, OperationalError):
        first = str(orig).strip().splitlines()[:1]
        text += f": {first[0]}" if first else ""
    return text


class RecordWriter:
    def __init__(
        self,
        store: InteractionStore,
        flush_interval: float = DEFAULT_FLUSH_SECONDS,
        webhooks: WebhookSettings | None = None,
        *,
        journal: Journal | None = None,
        dead_letters: DeadLetters | None = None,
        unwritable_after: float = DEFAULT_UNWRITABLE_SECONDS,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.webhooks = webhooks or WebhookSettings()
        self.journal = journal
        self.dead_letters = dead_letters
        self.unwritable_after = unwritable_after
        self.batches = 0
        self.failures = 0
        self.set_aside = 0
        self._pending: dict[str, Change] = {}
        self._oldest: float | None = None  # monotonic time of the oldest unwritten change
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        if journal is not None and journal.entries:
            self._oldest = time.monotonic()

    # -- the call path: never waits ------------------------------------------------------

    def create(self, interaction_id: str, **fields: Unpack[RecordChange]) -> None:
        self.store.check_fields(fields)
        merge(self._pending, {interaction_id: Change(True, fields)})
        self._kick()

    def update(self, interaction_id: str, **fields: Unpack[RecordChange]) -> None:
        self.store.check_fields(fields)
        merge(self._pending, {interaction_id: Change(False, fields)})
        self._kick()

    # -- health ---------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Record changes not yet committed: in memory, and in the journal."""
        return len(self._pending) + (self.journal.entries if self.journal else 0)

    @property
    def in_memory(self) -> int:
        """Records whose changes are held in memory (not yet in the database or journal)."""
        return len(self._pending)

    def unwritten_seconds(self) -> float:
        """Age of the oldest change not yet in the database (0 when none waits)."""
        return 0.0 if self._oldest is None else time.monotonic() - self._oldest

    @property
    def writable(self) -> bool:
        """False once a change has waited longer than ``unwritable_after`` (``/readyz``)."""
        return self.unwritten_seconds() <= self.unwritable_after

    def health(self) -> dict[str, float]:
        """The figures of ``/metrics`` and ``/readyz``."""
        return {
            "backlog": self.backlog,
            "in_memory": self.in_memory,
            "oldest_unwritten_seconds": round(self.unwritten_seconds(), 3),
            "failures": self.failures,
            "journal_bytes": self.journal.size if self.journal else 0,
            "journal_refused": self.journal.refused if self.journal else 0,
            "set_aside": self.set_aside,
        }

    # -- the writer task -----------------------------------------------------------------

    async def run(self) -> None:
        """Replay the journal, then flush every ``flush_interval`` while there is something
        to write; until cancelled."""
        if self.journal is not None and self.journal.entries:
            self._wake.set()
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_interval)  # let a batch gather
            self._wake.clear()
            # shielded: close() cancels this task, and a batch already handed to the worker
            # thread must finish (or go back to pending) before close() writes the rest
            if not await asyncio.shield(self.flush()):
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    def start(self) -> None:
        if self._task is None:
            if self.journal is not None and self.journal.entries:
                log.warning(
                    "record journal %s holds %d changes from an earlier run; replaying them",
                    self.journal.path,
                    self.journal.entries,
                )
            self._task = asyncio.get_running_loop().create_task(self.run(), name="record-writer")

    async def close(self) -> None:
        """Stop the task and write what is left; what the database does not take goes to the
        journal (replayed at the next start); a flush in progress finishes first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if await self.flush():
            return
        if self._pending:  # no journal, or it refused them: one more try
            await asyncio.sleep(RETRY_SECONDS)
            if not await self.flush() and self._pending:
                log.error("%d record changes could not be written at shutdown", len(self._pending))
                return
        if self.journal is not None and self.journal.entries:
            log.warning(
                "%d record changes kept in the journal %s; the next start writes them",
                self.journal.entries,
                self.journal.path,
            )

    async def flush(self) -> bool:
        """Commit everything pending now (the journal first); False when the database could
        not be written (the changes are then in the journal, or kept in memory)."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch and not (self.journal and self.journal.entries):
                return True
            taken = time.monotonic()
            waiting = self.backlog + len(batch)
            kept, error = await asyncio.to_thread(self._write_all, batch)
            if kept:  # changes made meanwhile are newer: they win
                self._pending = merge(kept, self._pending)
            if error is not None:
                self.failures += 1
                where = "in memory" if kept else "in the journal"
                log.error("writing %d records failed (%s); kept %s", waiting, error, where)
                return False
            self.batches += 1
            self._oldest = taken if self._pending else None
            return True

    # -- in the worker thread ------------------------------------------------------------

    def _write_all(self, batch: dict[str, Change]) -> tuple[dict[str, Change], str | None]:
        """Write the journal, then ``batch``: (what stays in memory, the error or None)."""
        journal = self.journal
        try:
            if journal is not None and journal.entries:
                if batch and journal.append(batch):
                    batch = {}
                self._replay(journal)
            if batch:
                self._write_split(batch)
        except Unavailable as exc:
            if batch and journal is not None and journal.append(batch):
                batch = {}
            return batch, str(exc)
        return {}, None

    def _replay(self, journal: Journal) -> None:
        changes = journal.changes()
        ids = iter(list(changes))
        while chunk := {iid: changes[iid] for iid in islice(ids, REPLAY_BATCH_RECORDS)}:
            self._write_split(chunk)
        journal.clear()
        log.info("record journal %s replayed: %d records written", journal.path, len(changes))

    def _write_split(self, batch: dict[str, Change]) -> None:
        """Write ``batch``; on a data error, each half on its own, down to the one change
        the database refuses, which is set aside. Raises Unavailable."""
        try:
            self._write(batch)
            return
        except Exception as exc:
            if self._unavailable(exc):
                raise Unavailable(describe(exc)) from exc
            reason = describe(exc)
        if len(batch) == 1:
            [(iid, change)] = batch.items()
            self._set_aside(iid, change, reason)
            return
        items = list(batch.items())
        half = len(items) // 2
        self._write_split(dict(items[:half]))
        self._write_split(dict(items[half:]))

    def _unavailable(self, exc: Exception) -> bool:
        """Is ``exc`` the database's failure rather than a change's? Connection and disk
        errors are; for anything else, the database is asked (a ping)."""
        if isinstance(exc, OperationalError | OSError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        try:
            self.store.ping()
        except Exception:
            return True
        return False

    def _set_aside(self, iid: str, change: Change, reason: str) -> None:
        self.set_aside += 1
        kept = self.dead_letters is not None and self.dead_letters.put(iid, change, reason)
        log.error(
            "record change of %s refused by the database (%s); set aside%s",
            iid,
            reason,
            f" in {self.dead_letters.path}" if kept and self.dead_letters else " (not kept)",
        )

    def _write(self, batch: dict[str, Change]) -> None:
        creates = {iid: p.fields for iid, p in batch.items() if p.create}
        updates = {iid: p.fields for iid, p in batch.items() if not p.create and p.fields}
        self.store.write_batch(
            creates,
            updates,
            webhook_urls=self.webhooks.urls,
            webhook_outcomes=self.webhooks.outcomes,
        )

    def _kick(self) -> None:
        if self._oldest is None:
            self._oldest = time.monotonic()
        if not self._wake.is_set():
            self._wake.set()


def writer_for(store: InteractionStore, config: Config) -> RecordWriter:
    """The app's writer: ``[store]`` flush interval, journal, dead-letter file, readiness."""
    settings = config.store
    return RecordWriter(
        store,
        settings.flush_interval_seconds,
        config.webhooks,
        journal=Journal(config.state_path(settings.journal_path), settings.journal_max_bytes),
        dead_letters=DeadLetters(config.state_path(settings.dead_letter_path)),
        unwritable_after=settings.unwritable_after_seconds,
    )
