"""The single writer of interaction records: batched, off the call path, still durable.

Call sessions hand their record changes to :class:`RecordWriter` without waiting
(``create``/``update`` are plain methods). Changes of one record are merged in memory; every
``flush_interval`` seconds (``[store] flush_interval_seconds``) the writer commits everything
pending in one transaction, in a worker thread, so no call ever waits for a disk write and
the database sees a few commits a second instead of one per state change.

Durability: a change is on disk at most one flush interval (plus the commit) after it was
made; a ``kill -9`` loses at most that window, and the next start's reconciliation closes
whatever it finds open (ari_app/calls/reconcile.py). A batch that fails (database down) is kept
and retried with the next one; nothing is dropped while the process lives.

Webhook events (docs/webhooks.md) are written here too: a batch that sets an outcome named in
``[webhooks] outcomes`` puts the event into the webhook outbox in the same transaction as the
record change, so an event exists exactly when its record change does. The sender
(ari_app/reporting/webhooks.py) delivers from the outbox; no call waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from ari_app.config import StoreSettings, WebhookSettings
from ari_app.store import InteractionStore, StoreError

__all__ = ["DEFAULT_FLUSH_SECONDS", "RecordWriter"]

log = logging.getLogger(__name__)

DEFAULT_FLUSH_SECONDS = StoreSettings().flush_interval_seconds  # [store] flush_interval_seconds
# after a failed batch, wait this long before the next attempt (the database is down)
RETRY_SECONDS = 1.0


@dataclass
class _Pending:
    create: bool
    fields: dict[str, Any] = field(default_factory=dict)


class RecordWriter:
    def __init__(
        self,
        store: InteractionStore,
        flush_interval: float = DEFAULT_FLUSH_SECONDS,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.webhooks = webhooks or WebhookSettings()
        self.batches = 0
        self.failures = 0
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- the call path: never waits ------------------------------------------------------

    def create(self, interaction_id: str, **fields: Any) -> None:
        self.store.check_fields(fields)
        entry = self._pending.get(interaction_id)
        if entry is None:
            self._pending[interaction_id] = _Pending(True, dict(fields))
        else:  # pragma: no cover - a record is created once
            entry.create = True
            entry.fields = {**fields, **entry.fields}
        self._kick()

    def update(self, interaction_id: str, **fields: Any) -> None:
        self.store.check_fields(fields)
        entry = self._pending.setdefault(interaction_id, _Pending(False))
        entry.fields.update(fields)
        self._kick()

    @property
    def backlog(self) -> int:
        """Records with changes not yet committed."""
        return len(self._pending)

    # -- the writer task -----------------------------------------------------------------

    async def run(self) -> None:
        """Flush every ``flush_interval`` while there is something to write; until cancelled."""
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
            self._task = asyncio.get_running_loop().create_task(self.run(), name="record-writer")

    async def close(self) -> None:
        """Stop the task and write what is left (retrying once if the database failed); a
        flush in progress finishes first (``flush`` holds the lock)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not await self.flush():
            await asyncio.sleep(RETRY_SECONDS)
            if not await self.flush():
                log.error("%d record changes could not be written at shutdown", self.backlog)

    async def flush(self) -> bool:
        """Commit everything pending now; False when the database refused (kept for later)."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return True
            try:
                await asyncio.to_thread(self._write, batch)
            except StoreError:
                self.failures += 1
                log.exception("writing %d records failed; kept for the next attempt", len(batch))
                for iid, newer in self._pending.items():  # changes made meanwhile win
                    old = batch.setdefault(iid, _Pending(False))
                    old.create = old.create or newer.create
                    old.fields.update(newer.fields)
                self._pending = batch
                return False
            self.batches += 1
            return True

    def _write(self, batch: dict[str, _Pending]) -> None:
        creates = {iid: p.fields for iid, p in batch.items() if p.create}
        updates = {iid: p.fields for iid, p in batch.items() if not p.create and p.fields}
        self.store.write_batch(
            creates,
            updates,
            webhook_urls=self.webhooks.urls,
            webhook_outcomes=self.webhooks.outcomes,
        )

    def _kick(self) -> None:
        if not self._wake.is_set():
            self._wake.set()
