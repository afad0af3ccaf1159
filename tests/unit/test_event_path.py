"""The event path's pure parts: per-call dispatch, admission control, the availability cache
and the batching record writer (on a real in-memory SQLite store)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from ari_app.calls.admission import (
    SHED_ACTIVE_CALLS,
    SHED_CALL_RATE,
    SHED_EVENT_BACKLOG,
    Admission,
    TokenBucket,
)
from ari_app.calls.availability import QueueAvailability
from ari_app.calls.dispatch import Dispatcher
from ari_app.config import DEFAULT_LIMITS
from ari_app.records import RecordChange
from ari_app.store import InteractionStore
from ari_app.store.writer import RecordWriter
from tests.records import NODE

# -- dispatch ------------------------------------------------------------------------------


async def test_a_slow_call_delays_only_itself_and_each_call_keeps_its_order() -> None:
    seen: list[tuple[str, int]] = []
    release_slow = asyncio.Event()

    async def handle(key: str, n: int) -> None:
        if key == "slow" and n == 1:
            await release_slow.wait()
        seen.append((key, n))

    dispatcher: Dispatcher[int] = Dispatcher(handle)
    for n in (1, 2, 3):
        dispatcher.post("slow", n)
        dispatcher.post("fast", n)
    assert dispatcher.pending == 6
    await asyncio.sleep(0.01)
    # the fast call is done although the slow one is still on its first event
    assert seen == [("fast", 1), ("fast", 2), ("fast", 3)]
    assert dispatcher.pending == 3 and dispatcher.busy_calls == 1
    release_slow.set()
    await dispatcher.idle()
    assert [n for k, n in seen if k == "slow"] == [1, 2, 3]
    assert dispatcher.pending == 0 and dispatcher.busy_calls == 0 and dispatcher.handled == 6


async def test_a_failing_event_is_skipped_and_the_call_goes_on() -> None:
    seen: list[int] = []

    async def handle(key: str, n: int) -> None:
        if n == 2:
            raise RuntimeError("boom")
        seen.append(n)

    dispatcher: Dispatcher[int] = Dispatcher(handle)
    for n in (1, 2, 3):
        dispatcher.post("a", n)
    await dispatcher.idle()
    assert seen == [1, 3] and dispatcher.pending == 0


async def test_an_event_posted_after_the_queue_drained_starts_a_new_task() -> None:
    seen: list[int] = []

    async def handle(key: str, n: int) -> None:
        seen.append(n)

    dispatcher: Dispatcher[int] = Dispatcher(handle)
    dispatcher.post("a", 1)
    await dispatcher.idle()
    dispatcher.post("a", 2)
    await dispatcher.idle()
    assert seen == [1, 2]


async def test_spawned_jobs_are_awaited_by_idle_and_their_failures_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handle(key: str, n: int) -> None:
        return None

    async def fails() -> None:
        raise RuntimeError("job failed")

    dispatcher: Dispatcher[int] = Dispatcher(handle)
    dispatcher.spawn(fails(), "hang up stray")
    await dispatcher.idle()
    assert "hang up stray failed" in caplog.text


# -- admission -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_its_rate_with_a_burst_of_one_second() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=5, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.2  # one token back
    assert bucket.take() and not bucket.take()
    clock.now += 60  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 5


@pytest.mark.parametrize(
    ("active", "pending", "expected"),
    [
        (0, 0, None),
        (DEFAULT_LIMITS.max_active_calls, 0, SHED_ACTIVE_CALLS),
        (0, DEFAULT_LIMITS.max_pending_events, SHED_EVENT_BACKLOG),
    ],
)
def test_admission_sheds_above_each_limit(active: int, pending: int, expected: str) -> None:
    assert Admission(DEFAULT_LIMITS).refusal(active, pending) == expected


def test_admission_sheds_above_the_call_rate() -> None:
    clock = Clock()
    admission = Admission(DEFAULT_LIMITS, clock)
    burst = int(DEFAULT_LIMITS.max_new_calls_per_second)
    assert [admission.refusal(0, 0) for _ in range(burst)] == [None] * burst
    assert admission.refusal(0, 0) == SHED_CALL_RATE


# -- availability cache --------------------------------------------------------------------


async def test_concurrent_calls_share_one_read_and_the_value_expires() -> None:
    clock = Clock()
    reads: list[str] = []
    gate = asyncio.Event()

    async def read(queue: str, channel_id: str) -> str:
        reads.append(channel_id)
        await gate.wait()
        return "available"

    cache = QueueAvailability(read, ttl=2.0, clock=clock)
    waiting = [asyncio.create_task(cache.get("agents", f"c{i}")) for i in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["available"] * 5
    assert reads == ["c0"]
    clock.now += 1.9
    assert await cache.get("agents", "c9") == "available" and reads == ["c0"]
    clock.now += 0.2
    await cache.get("agents", "c10")
    assert reads == ["c0", "c10"]


async def test_a_failed_read_reaches_every_waiter_and_is_not_cached() -> None:
    attempts = 0

    async def read(queue: str, channel_id: str) -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise ConnectionError("asterisk gone")
        return "busy"

    cache = QueueAvailability(read, ttl=5.0)
    results = await asyncio.gather(cache.get("q", "a"), cache.get("q", "b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await cache.get("q", "c") == "busy"


# -- record writer -------------------------------------------------------------------------


async def test_changes_are_merged_and_committed_in_one_batch(store: InteractionStore) -> None:
    writer = RecordWriter(store, flush_interval=0.01)
    writer.create("a", profile="default", caller_channel="c-a", started_at=1.0)
    writer.update("a", state="bot_dialling")
    writer.update("a", state="bot_connected", bot_answered_at=2.0)
    writer.create("b", profile="default", caller_channel="c-b", started_at=1.5)
    assert writer.backlog == 2 and store.get("a") is None  # nothing waited for the disk
    writer.start()
    try:
        for _ in range(100):
            if writer.backlog == 0 and writer.batches:
                break
            await asyncio.sleep(0.01)
    finally:
        await writer.close()
    row = store.get("a")
    assert row is not None and row["state"] == "bot_connected" and row["bot_answered_at"] == 2.0
    assert row["node"] == NODE
    assert store.get("b") is not None
    assert writer.batches == 1


async def test_unknown_fields_are_refused_at_once(store: InteractionStore) -> None:
    writer = RecordWriter(store)
    with pytest.raises(KeyError):
        writer.update("a", no_such_column=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        writer.update("a", outcome="made_up")


def fail_first_write(
    store: InteractionStore, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None]
) -> None:
    """The store's first batch write runs ``meanwhile`` and then fails as a locked database
    does; later writes go through."""
    real = store.write_batch
    calls = 0

    def flaky(
        creates: Mapping[str, RecordChange],
        updates: Mapping[str, RecordChange],
        **webhooks: Any,
    ) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            meanwhile()
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real(creates, updates, **webhooks)

    monkeypatch.setattr(store, "write_batch", flaky)


async def test_a_failed_batch_is_kept_and_newer_changes_win(
    store: InteractionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = RecordWriter(store)
    writer.create("a", profile="default", caller_channel="c-a", started_at=1.0)
    writer.update("a", state="bot_dialling")
    # a change made while the write fails
    fail_first_write(store, monkeypatch, lambda: writer.update("a", state="bot_connected"))
    assert await writer.flush() is False
    assert writer.failures == 1 and writer.backlog == 1
    assert await writer.flush() is True
    row = store.get("a")
    assert row is not None and row["state"] == "bot_connected"


async def test_closing_while_a_batch_is_being_written_loses_nothing(
    store: InteractionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shutdown's close() comes while the writer task has a batch in the worker thread,
    and that write fails: the batch goes back to pending and close() writes it with the
    rest (cancelling the task must not drop a batch in flight)."""
    writer = RecordWriter(store, flush_interval=0.0)
    in_thread, release = threading.Event(), threading.Event()

    def in_flight() -> None:
        in_thread.set()
        release.wait(5)

    fail_first_write(store, monkeypatch, in_flight)
    writer.start()
    writer.create("a", profile="default", caller_channel="c-a", started_at=1.0)
    assert await asyncio.to_thread(in_thread.wait, 5)
    writer.create("b", profile="default", caller_channel="c-b", started_at=2.0)
    closing = asyncio.create_task(writer.close())
    await asyncio.sleep(0.05)  # close() has cancelled the task by now
    release.set()
    await closing
    assert store.get("a") is not None and store.get("b") is not None
    assert writer.backlog == 0
