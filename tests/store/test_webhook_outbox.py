"""The webhook outbox on SQLite and PostgreSQL, delivered to a real HTTP server on loopback.

Events are written by the record writer in the batch that sets the outcome; the sender POSTs
them signed, retries with backoff while the receiver is down, and each event id reaches the
receiver once it is up.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec

from ari_app.config import WebhookSettings
from ari_app.records import EscalationAttempt
from ari_app.reporting.webhooks import WebhookSender, backoff_seconds, verify
from ari_app.store import InteractionStore
from ari_app.store.writer import RecordWriter
from tests.harness import until
from tests.webhook_receiver import SECRET, Receiver

FAST = WebhookSettings(
    urls=(),
    outcomes=("escalated",),
    timeout_seconds=1.0,
    max_attempts=50,
    backoff_initial_seconds=0.05,
    backoff_max_seconds=0.4,
    poll_interval_seconds=0.05,
    batch_size=10,
)


def escalate(writer: RecordWriter, iid: str) -> None:
    writer.create(
        iid,
        profile="default",
        caller_channel=f"chan-{iid}",
        caller_number="15550001111",
        dialled_number="5551000",
        started_at=1000.0,
    )
    writer.update(
        iid,
        state="transferring",
        escalate_to="billing",
        context_json={"escalate_to": "billing", "order": "A-1"},
        transfer_at=1010.0,
    )
    writer.update(iid, state="queued", outcome="escalated", queue="billing-queue", queued_at=1010.5)


async def test_events_are_written_with_the_record_change(store: InteractionStore) -> None:
    urls = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")
    writer = RecordWriter(store, 0.01, WebhookSettings(urls=urls, outcomes=("escalated",)))
    escalate(writer, "i1")
    writer.create("i2", profile="default", caller_channel="c2", outcome="resolved")
    await writer.flush()

    rows = store.webhook_events()
    assert [(r["event_id"], r["url"]) for r in rows] == [("i1.escalated", u) for u in urls]
    assert all(r["attempts"] == 0 and r["delivered_at"] is None for r in rows)
    body = json.loads(rows[0]["body"])
    assert body["event"] == "interaction.escalated" and body["event_id"] == "i1.escalated"
    assert body["interaction_id"] == "i1" and body["caller_number"] == "15550001111"
    assert body["queue"] == "billing-queue" and body["escalate_to"] == "billing"
    assert body["context"] == {"escalate_to": "billing", "order": "A-1"}
    assert body["reason"] is None and body["outcome"] == "escalated"
    assert body["timestamps"]["started_at"] == 1000.0
    assert body["timestamps"]["queued_at"] == 1010.5
    assert body["timestamps"]["ended_at"] is None

    # the same outcome written again (reconciliation, a retried batch) is the same event
    writer.update("i1", outcome="escalated", ended_at=1100.0)
    await writer.flush()
    assert len(store.webhook_events()) == 2


async def test_a_failed_escalation_is_an_event_by_default(store: InteractionStore) -> None:
    """The queue ended without an agent: ``interaction.escalation_failed`` with the attempts
    (the default outcomes), once per interaction however often it fails."""
    writer = RecordWriter(store, 0.01, WebhookSettings(urls=("http://127.0.0.1:9/a",)))
    escalate(writer, "i1")
    await writer.flush()
    attempts: list[EscalationAttempt] = [
        {
            "target": "billing-queue",
            "via": "refer",
            "queued_at": 1010.5,
            "result": "timeout",
            "wait_seconds": 300.0,
            "agent_answered_at": None,
        }
    ]
    writer.update("i1", state="bot_dialling", outcome="escalation_failed", escalations=attempts)
    await writer.flush()
    writer.update("i1", outcome="escalation_failed", escalations=attempts + attempts)
    await writer.flush()
    events = {r["event_id"]: json.loads(r["body"]) for r in store.webhook_events()}
    assert set(events) == {"i1.escalated", "i1.escalation_failed"}
    failed = events["i1.escalation_failed"]
    assert failed["event"] == "interaction.escalation_failed"
    assert failed["escalations"] == attempts


async def test_every_outcome_when_configured(store: InteractionStore) -> None:
    settings = WebhookSettings(urls=("http://127.0.0.1:9/a",), outcomes=("resolved", "abandoned"))
    writer = RecordWriter(store, 0.01, settings)
    writer.create("r", profile="default", caller_channel="c1")
    writer.create("a", profile="default", caller_channel="c2")
    writer.create("e", profile="default", caller_channel="c3")
    await writer.flush()
    writer.update("r", outcome="resolved")
    writer.update("a", outcome="abandoned")
    writer.update("e", outcome="escalated")
    await writer.flush()
    assert sorted(r["event_id"] for r in store.webhook_events()) == ["a.abandoned", "r.resolved"]


async def test_no_urls_no_outbox_rows(store: InteractionStore) -> None:
    writer = RecordWriter(store, 0.01)
    escalate(writer, "i1")
    await writer.flush()
    assert store.webhook_events() == []


async def test_receiver_down_then_up_gets_every_event_once(
    store: InteractionStore, receiver: Receiver
) -> None:
    settings = msgspec.structs.replace(FAST, urls=(receiver.url,))
    writer = RecordWriter(store, 0.01, settings)
    sender = WebhookSender(settings, store, SECRET)
    task = asyncio.create_task(sender.run())
    try:
        iids = [f"call{n}" for n in range(5)]
        for iid in iids:
            escalate(writer, iid)
        await writer.flush()

        # nobody listens yet: every event fails and is retried with growing waits
        def retried() -> list[dict[str, Any]] | None:
            rows = store.webhook_events()
            return rows if all(r["attempts"] >= 2 for r in rows) else None

        rows = await until(retried, 20, "every event attempted at least twice")
        assert all(r["delivered_at"] is None and r["attempts"] >= 2 for r in rows)
        assert all("ClientConnectorError" in (r["last_error"] or "") for r in rows)
        assert all(r["next_attempt_at"] > r["created_at"] for r in rows)

        await receiver.start()
        delivered = await until(
            lambda: all(r["delivered_at"] for r in store.webhook_events()) or None,
            20,
            "every event delivered after the receiver came back",
        )
        assert delivered
        assert sorted(receiver.ids()) == sorted(f"{iid}.escalated" for iid in iids)
        assert receiver.bad_signatures == 0
        assert {p["body"]["interaction_id"] for p in receiver.posts} == set(iids)
        # the body posted is the body stored, byte for byte
        stored = {r["event_id"]: r["body"].encode() for r in store.webhook_events()}
        assert all(stored[p["id"]] == p["raw"] for p in receiver.posts)
        # and nothing is sent again once delivered
        await asyncio.sleep(5 * FAST.poll_interval_seconds)
        assert len(receiver.posts) == len(iids)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_error_answers_are_retried_and_given_up_at_max_attempts(
    store: InteractionStore, receiver: Receiver
) -> None:
    receiver.status = 503
    await receiver.start()
    settings = msgspec.structs.replace(FAST, urls=(receiver.url,), max_attempts=3)
    writer = RecordWriter(store, 0.01, settings)
    sender = WebhookSender(settings, store, SECRET)
    escalate(writer, "i1")
    await writer.flush()
    task = asyncio.create_task(sender.run())
    try:
        await until(lambda: sender.given_up == 1, 10, "the event given up")
        await asyncio.sleep(5 * FAST.poll_interval_seconds)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert receiver.ids() == ["i1.escalated"] * 3  # no attempt after the last
    (row,) = store.webhook_events()
    assert row["attempts"] == 3 and row["delivered_at"] is None
    assert (row["last_error"] or "").startswith("HTTP 503")
    assert store.webhook_backlog(settings.max_attempts) == 0


async def test_a_slow_receiver_never_holds_up_the_records(
    store: InteractionStore, receiver: Receiver
) -> None:
    receiver.delay = 3.0  # longer than the sender's time-out
    await receiver.start()
    settings = msgspec.structs.replace(FAST, urls=(receiver.url,))
    writer = RecordWriter(store, 0.01, settings)
    sender = WebhookSender(settings, store, SECRET)
    task = asyncio.create_task(sender.run())
    try:
        escalate(writer, "slow")
        await writer.flush()
        await until(lambda: receiver.arrived >= 1, 10, "the first POST at the receiver")
        # while the first POST hangs, more calls' records are written without waiting
        started = time.monotonic()
        for n in range(20):
            escalate(writer, f"next{n}")
            assert await writer.flush()
        assert time.monotonic() - started < 2.0

        def timed_out() -> bool:
            row = next(r for r in store.webhook_events() if r["event_id"] == "slow.escalated")
            return "TimeoutError" in (row["last_error"] or "")

        await until(timed_out, 10, "the slow POST timed out and was recorded so")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_two_senders_on_one_store_send_each_event_once(
    store: InteractionStore, receiver: Receiver
) -> None:
    await receiver.start()
    settings = msgspec.structs.replace(FAST, urls=(receiver.url,))
    writer = RecordWriter(store, 0.01, settings)
    for n in range(20):
        escalate(writer, f"c{n}")
    await writer.flush()
    senders = [WebhookSender(settings, store, SECRET) for _ in range(2)]
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        await until(lambda: len(receiver.posts) >= 20, 20, "20 events delivered")
        await asyncio.sleep(5 * FAST.poll_interval_seconds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(receiver.ids()) == sorted(f"c{n}.escalated" for n in range(20))


def test_backoff_doubles_up_to_the_limit() -> None:
    settings = WebhookSettings(backoff_initial_seconds=1.0, backoff_max_seconds=10.0)
    assert [backoff_seconds(settings, n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_signature_verification_rejects_tampering_and_old_timestamps() -> None:
    from ari_app.reporting.webhooks import sign

    body = b'{"event_id":"x"}'
    header = sign(SECRET, 1_000_000, body)
    assert verify(SECRET, header, body, now=1_000_010, tolerance=300)
    assert not verify(SECRET, header, body + b" ", now=1_000_010, tolerance=300)
    assert not verify(b"other", header, body, now=1_000_010, tolerance=300)
    assert not verify(SECRET, header, body, now=1_000_000 + 301, tolerance=300)
    assert not verify(SECRET, "garbage", body, now=1_000_000, tolerance=300)
