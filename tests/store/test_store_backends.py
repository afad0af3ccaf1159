"""The InteractionStore API on SQLite and on PostgreSQL: the same tests on both."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ari_app.outcomes import OUTCOMES
from ari_app.store import COLUMNS, InteractionStore
from ari_app.store.writer import RecordWriter
from tests.records import create, stored, update

T0 = 1_700_000_000.123456  # sub-millisecond digits must survive the round trip


def new(store: InteractionStore, iid: str, **fields: Any) -> None:
    fields.setdefault("profile", "default")
    fields.setdefault("caller_channel", f"chan-{iid}")
    create(store, iid, **fields)


def test_create_then_get_returns_every_field(store: InteractionStore) -> None:
    new(
        store,
        "i1",
        started_at=T0,
        dialled_number="5551000",
        caller_number="15550001111",
        bot_channel="bot-i1",
    )
    row = store.get("i1")
    assert row is not None
    assert row["interaction_id"] == "i1"
    assert row["state"] == "started" and row["outcome"] is None
    assert row["node"] == "node-a"  # the store's node unless given
    assert row["started_at"] == T0
    assert row["dialled_number"] == "5551000" and row["caller_number"] == "15550001111"
    assert row["bot_channel"] == "bot-i1" and row["ended_at"] is None
    assert row["updated_at"] >= row["started_at"]
    assert set(row) == COLUMNS | {"interaction_id", "updated_at"}
    assert store.get("nope") is None


def test_update_sets_fields_and_decodes_the_context(store: InteractionStore) -> None:
    new(store, "i1", started_at=T0)
    before = store.get("i1")
    assert before is not None
    update(
        store,
        "i1",
        state="queued",
        outcome="escalated",
        queue="agents-queue",
        escalate_to="agents-queue",
        context_json={"escalate_to": "agents-queue", "note": "ünïcode ✓"},
        bot_answered_at=T0 + 1,
        transfer_at=T0 + 61.5,
        bot_ended_at=T0 + 61.5,
        bot_seconds=60.5,
        billable_minutes=2.0,
        billing_rounding="ceil_minute",
        agent_answered_at=T0 + 70,
        agent_channel="agent-1",
    )
    row = store.get("i1")
    assert row is not None
    assert row["outcome"] == "escalated" and row["queue"] == "agents-queue"
    assert row["context"] == {"escalate_to": "agents-queue", "note": "ünïcode ✓"}
    assert row["bot_seconds"] == 60.5 and row["billable_minutes"] == 2.0
    assert row["transfer_at"] == T0 + 61.5 and row["agent_answered_at"] == T0 + 70
    assert row["updated_at"] >= before["updated_at"]
    update(store, "i1", ended_at=T0 + 90)
    assert stored(store, "i1")["ended_at"] == T0 + 90
    update(store, "missing", state="queued")  # no such record: nothing happens
    assert store.get("missing") is None


def test_bad_fields_are_refused(store: InteractionStore) -> None:
    """The writer refuses an unknown column or outcome before anything queues (and mypy
    refuses a misspelt column before that)."""
    new(store, "i1")
    writer = RecordWriter(store)
    with pytest.raises(KeyError):
        writer.update("i1", nonsense=1)  # type: ignore[call-arg]
    with pytest.raises(KeyError):
        writer.update("i1", updated_at=1.0)  # type: ignore[call-arg]  # the store keeps it
    with pytest.raises(ValueError):
        writer.update("i1", outcome="maybe")
    assert writer.backlog == 0
    for outcome in OUTCOMES:
        update(store, "i1", outcome=outcome)
        assert stored(store, "i1")["outcome"] == outcome


def test_open_interactions_by_node(store: InteractionStore, database_url: str) -> None:
    other = InteractionStore(database_url, node="node-b")
    try:
        new(store, "a1", started_at=T0)
        new(store, "a2", started_at=T0 + 1)
        new(other, "b1", started_at=T0 + 2)
        new(store, "legacy", started_at=T0 + 3, node=None)  # a record from before nodes
        update(store, "a2", ended_at=T0 + 5)
        ids = [r["interaction_id"] for r in store.open_interactions()]
        assert ids == ["a1", "b1", "legacy"]
        assert [r["interaction_id"] for r in store.open_interactions("node-a")] == ["a1"]
        mine = store.open_interactions("node-a", include_unowned=True)
        assert [r["interaction_id"] for r in mine] == ["a1", "legacy"]
        assert [r["interaction_id"] for r in other.open_interactions("node-b")] == ["b1"]
    finally:
        other.close()


def test_between_is_half_open_and_ordered(store: InteractionStore) -> None:
    for i, offset in enumerate([30, 0, 10, 20, 40]):
        new(store, f"i{i}", started_at=T0 + offset)
    ids = [r["interaction_id"] for r in store.between(T0, T0 + 30)]
    assert ids == ["i1", "i2", "i3"]  # 0, 10, 20; 30 is the excluded end
    assert [r["interaction_id"] for r in store.between(T0 + 30, T0 + 31)] == ["i0"]
    assert store.between(T0 + 41, T0 + 100) == []
    assert store.between(T0 + 10, T0 + 10) == []
    assert [r["started_at"] for r in store.all()] == sorted(T0 + o for o in [30, 0, 10, 20, 40])


async def test_async_readers_do_the_same(store: InteractionStore) -> None:
    new(store, "x", started_at=T0)
    update(store, "x", state="bot_connected", bot_answered_at=T0 + 2)
    row = await store.aget("x")
    assert row is not None and row["state"] == "bot_connected"
    assert [r["interaction_id"] for r in await store.aopen_interactions("node-a")] == ["x"]


def test_a_write_is_visible_to_another_store_at_once(
    store: InteractionStore, database_url: str
) -> None:
    reader = InteractionStore(database_url)
    try:
        new(store, "i1")
        update(store, "i1", state="bot_connected")
        row = reader.get("i1")
        assert row is not None and row["state"] == "bot_connected"
    finally:
        reader.close()


def test_concurrent_writers_on_one_database(database_url: str) -> None:
    """Two stores (two nodes) writing at the same time, from several threads each: every
    record complete, no write lost, nothing raised."""
    stores = [InteractionStore(database_url, node=f"node-{n}") for n in "ab"]
    per_thread, threads_per_store = 25, 3
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores) * threads_per_store)

    def work(store: InteractionStore, prefix: str) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                iid = f"{prefix}-{i}"
                create(store, iid, profile="default", caller_channel=iid, started_at=time.time())
                update(store, iid, state="bot_dialling", bot_channel=f"bot-{iid}")
                update(store, iid, state="bot_connected", bot_answered_at=time.time())
                update(store, iid, state="resolved", outcome="resolved", ended_at=time.time())
                update(store, "shared", queue=prefix)  # both nodes on one row too
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    try:
        create(stores[0], "shared", profile="default", caller_channel="shared")
        threads = [
            threading.Thread(target=work, args=(store, f"{store.node}-t{t}"))
            for store in stores
            for t in range(threads_per_store)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        rows = {r["interaction_id"]: r for r in stores[1].all()}
        assert len(rows) == 1 + len(stores) * threads_per_store * per_thread
        finished = [r for iid, r in rows.items() if iid != "shared"]
        assert all(r["outcome"] == "resolved" and r["ended_at"] for r in finished)
        assert all(r["bot_channel"] == f"bot-{r['interaction_id']}" for r in finished)
        assert {r["node"] for r in finished} == {"node-a", "node-b"}
        assert (rows["shared"]["queue"] or "").startswith(("node-a-", "node-b-"))
        assert stores[0].open_interactions() == [rows["shared"]]
    finally:
        for store in stores:
            store.close()


def test_in_memory_store_for_scripts() -> None:
    store = InteractionStore(":memory:")
    try:
        create(store, "m", profile="default", caller_channel="c")
        assert store.get("m") is not None and store.dialect == "sqlite"
    finally:
        store.close()


def test_the_password_never_shows() -> None:
    store = InteractionStore("postgresql://user:s3cret@127.0.0.1:1/db", migrate=False)
    assert "s3cret" not in repr(store)
    assert store.url.drivername == "postgresql+psycopg"
    store.close()
