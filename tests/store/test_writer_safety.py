"""The record writer on each backend: idempotent batches, a refused change set aside while the
rest is written, the journal's bounds, and the health figures (docs/records.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from ari_app.config import WebhookSettings
from ari_app.records import RecordChange
from ari_app.reporting.metrics import Metrics
from ari_app.store import InteractionStore
from ari_app.store.journal import Change, DeadLetters, Journal
from ari_app.store.writer import RecordWriter
from tests.records import update

HOOK = WebhookSettings(
    urls=("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"), outcomes=("resolved",)
)


def record(n: int) -> RecordChange:
    return {"profile": "default", "caller_channel": f"c{n}", "caller_number": f"+4930777{n:04d}"}


def test_a_batch_written_twice_is_one_record_and_one_event_per_url(
    store: InteractionStore,
) -> None:
    created: RecordChange = {**record(1), "started_at": 1.0}
    store.write_batch({"a": created}, {})
    update(store, "a", state="bot_connected", bot_answered_at=2.0)
    resolved: dict[str, RecordChange] = {
        "a": {**record(1), "state": "resolved", "outcome": "resolved"}
    }
    for _ in range(2):  # the second is the replay of a batch whose COMMIT reply was lost
        store.write_batch(resolved, {}, webhook_urls=HOOK.urls, webhook_outcomes=HOOK.outcomes)
    row = store.get("a")
    assert row is not None and row["state"] == "resolved" and row["bot_answered_at"] == 2.0
    assert row["started_at"] == 1.0  # a replayed create does not reset the defaults
    assert sorted(e["url"] for e in store.webhook_events()) == sorted(HOOK.urls)


async def test_a_refused_change_is_set_aside_and_the_rest_written(
    store: InteractionStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = DeadLetters(tmp_path / "dead.jsonl")
    writer = RecordWriter(store, 0.01, HOOK, dead_letters=dead)
    for n in range(7):
        writer.create(f"id{n}", **record(n))
        writer.update(f"id{n}", state="resolved", outcome="resolved")
    writer.create("bad", caller_channel="c-bad", caller_number="+4930999888")  # no profile
    assert await writer.flush() is True
    assert sorted(r["interaction_id"] for r in store.all()) == [f"id{n}" for n in range(7)]
    assert len(store.webhook_events()) == 7 * len(HOOK.urls)
    assert writer.set_aside == 1 and writer.backlog == 0 and writer.failures == 0
    [kept] = [json.loads(line) for line in dead.path.read_text().splitlines()]
    assert kept["id"] == "bad" and kept["fields"]["caller_number"] == "+4930999888"
    assert kept["error"].startswith("IntegrityError")
    assert "bad" in caplog.text and "set aside" in caplog.text
    assert "+4930999888" not in caplog.text  # logged without the values


async def test_while_the_database_fails_changes_go_to_the_journal_not_memory(
    store: InteractionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", 1024 * 1024)
    writer = RecordWriter(store, 0.01, journal=journal, unwritable_after=0.2)
    real = store.write_batch

    def down(creates: Mapping[str, Any], updates: Mapping[str, Any], **_: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store, "write_batch", down)
    writer.create("a", **record(1))
    assert await writer.flush() is False
    writer.update("a", state="queued")  # appended behind the create, not written ahead of it
    assert await writer.flush() is False
    assert writer.in_memory == 0 and journal.entries == 2 and writer.backlog == 2
    time.sleep(0.25)
    assert not writer.writable and writer.health()["oldest_unwritten_seconds"] > 0.2
    assert b"botbridge_record_writer_journal_bytes" in exposition(writer)

    monkeypatch.setattr(store, "write_batch", real)
    assert await writer.flush() is True
    row = store.get("a")
    assert row is not None and row["state"] == "queued"
    assert journal.size == 0 and writer.backlog == 0 and writer.writable


async def test_a_full_journal_keeps_changes_in_memory_and_says_so(
    store: InteractionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", 300)
    writer = RecordWriter(store, 0.01, journal=journal)

    def down(creates: Mapping[str, Any], updates: Mapping[str, Any], **_: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(store, "write_batch", down)
    for n in range(10):
        writer.create(f"id{n}", **record(n))
    assert await writer.flush() is False
    assert writer.in_memory == 10 and journal.size == 0 and journal.refused == 1
    assert writer.health()["journal_refused"] == 1


def test_a_torn_last_journal_line_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", 1024 * 1024)
    assert journal.append(
        {"a": Change(True, {"profile": "p"}), "b": Change(False, {"state": "resolved"})}
    )
    with journal.path.open("ab") as f:
        f.write(b'{"id":"c","create":tr')  # a crash in the middle of an append
    again = Journal(journal.path, 1024 * 1024)
    assert set(again.changes()) == {"a", "b"} and "line 3 unreadable" in caplog.text


def exposition(writer: RecordWriter) -> bytes:
    metrics = Metrics(process=False)
    metrics.bind(
        active_calls=lambda: 0,
        reconnects=lambda: 0,
        connected=lambda: True,
        record_writer=writer.health,
    )
    return metrics.exposition()
