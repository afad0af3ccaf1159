"""Test helpers: the node the unit tests' store and config name, stored interaction records,
and records written the app's one way.

The app writes records only through the record writer (ari_app/store/writer.py), which checks
each change and commits its batches with ``InteractionStore.write_batch``. ``create`` and
``update`` here take that same path for one change, committed at once (tests read right
after), and :class:`WriteThrough` is a record sink that does so for a call session.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from ari_app.records import Record, RecordChange
from ari_app.store import InteractionStore
from tests.harness import until

if TYPE_CHECKING:
    from typing_extensions import Unpack

# the node the unit tests' in-memory store writes new records as (and their config names)
NODE = "node-a"


class RecordGetter(Protocol):
    def get(self, interaction_id: str) -> Record | None: ...


def stored(store: RecordGetter, interaction_id: str) -> Record:
    """The record of ``interaction_id``; fails the test when there is none."""
    row = store.get(interaction_id)
    assert row is not None, f"no record {interaction_id!r}"
    return row


def create(store: InteractionStore, interaction_id: str, **fields: Unpack[RecordChange]) -> None:
    """A new record, checked and committed as the record writer does."""
    store.check_fields(fields)
    store.write_batch({interaction_id: fields}, {})


def update(store: InteractionStore, interaction_id: str, **fields: Unpack[RecordChange]) -> None:
    """A change of one record, checked and committed as the record writer does."""
    store.check_fields(fields)
    store.write_batch({}, {interaction_id: fields})


class WriteThrough:
    """A call session's record sink committing each change at once (the writer's path)."""

    def __init__(self, store: InteractionStore) -> None:
        self.store = store

    def create(self, interaction_id: str, **fields: Unpack[RecordChange]) -> None:
        create(self.store, interaction_id, **fields)

    def update(self, interaction_id: str, **fields: Unpack[RecordChange]) -> None:
        update(self.store, interaction_id, **fields)


def all_stored(url: str) -> list[Record]:
    """Every record of the store at ``url`` (a running stack's), oldest first."""
    store = InteractionStore(url, migrate=False)
    try:
        return store.all()
    finally:
        store.close()


async def closed_calls(url: str, prefix: str, calls: int, timeout: float) -> list[Record]:
    """The records of the callers numbered ``<prefix>...`` in the store at ``url``, once
    there are at least ``calls`` of them and every one is closed."""

    def closed() -> list[Record] | None:
        rows = [r for r in all_stored(url) if str(r["caller_number"] or "").startswith(prefix)]
        return rows if len(rows) >= calls and all(r["ended_at"] for r in rows) else None

    return await until(closed, timeout, f"{calls} closed records of callers {prefix}...")


def assert_resolved_once(rows: list[Record], calls: int, bot_talk_ms: int) -> None:
    """One record per call (as many as calls, one per caller number), each `resolved` by
    the bot's hang-up after its whole conversation: none bypassed the bot, none was cut."""
    numbers = Counter(r["caller_number"] for r in rows)
    twice = sorted(str(n) for n, count in numbers.items() if count > 1)
    assert not twice, twice[:5]
    assert len(rows) == calls == len(numbers), (len(rows), calls)
    cut = [r for r in rows if (r["outcome"], r["error_reason"]) != ("resolved", None)]
    assert not cut, cut[:5]
    short = [r for r in rows if (r["bot_seconds"] or 0.0) < bot_talk_ms / 1000 - 1]
    assert not short, short[:5]
