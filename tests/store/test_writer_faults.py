"""Fault injection against a real PostgreSQL (and SQLite on a full file system): the record
writer loses nothing, duplicates nothing and never wedges (docs/records.md, "When the database
fails"). These run at the writer's level, with the app's writer (``writer_for``) where the
configuration matters: the calls are simulated writes at the app's rate, not SIPp calls."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ari_app.config import WebhookSettings, load_config
from ari_app.store import InteractionStore
from ari_app.store.journal import Journal
from ari_app.store.writer import RecordWriter, writer_for
from tests.postgres import PostgresServer
from tests.store.fault_tools import CallStream, CommitCutProxy, caller_number, drained

HOOK = WebhookSettings(urls=("http://127.0.0.1:9/hook",), outcomes=("resolved",))
CALLS_PER_SECOND = 20
OUTAGE_SECONDS = 30.0


@pytest.fixture
def pg_url(own_postgres: PostgresServer) -> Iterator[str]:
    url = own_postgres.create_database()
    InteractionStore(url).close()  # migrated while the server is up
    yield url


def assert_one_resolved_record_and_event_each(store: InteractionStore, calls: list[str]) -> None:
    records = store.all()
    assert sorted(r["interaction_id"] for r in records) == sorted(calls)
    assert {r["outcome"] for r in records} == {"resolved"}
    assert all(r["ended_at"] is not None for r in records)
    events = store.webhook_events()
    assert sorted(e["interaction_id"] for e in events) == sorted(calls)  # one each


async def test_postgres_stopped_for_30_s_during_calls_loses_and_duplicates_nothing(
    own_postgres: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    store = InteractionStore(pg_url, migrate=False)
    journal = Journal(tmp_path / "journal.jsonl", 64 * 1024 * 1024)
    writer = RecordWriter(store, 0.2, HOOK, journal=journal)
    stream = CallStream(writer, CALLS_PER_SECOND)
    seen: list[dict[str, float]] = []

    async def watch() -> None:
        while True:
            seen.append(writer.health())
            await asyncio.sleep(0.1)

    async def outage() -> None:
        await asyncio.sleep(5)
        await asyncio.to_thread(own_postgres.halt)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(own_postgres.resume)

    writer.start()
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(stream.run(OUTAGE_SECONDS + 12), outage())
        assert await drained(writer, 60)
    finally:
        watcher.cancel()
        await writer.close()
    try:
        assert len(stream.calls) >= CALLS_PER_SECOND * (OUTAGE_SECONDS + 10)
        assert_one_resolved_record_and_event_each(store, stream.calls)
        assert writer.failures > 0 and writer.set_aside == 0
        # the outage's changes went to the journal, not to memory: memory stayed bounded
        assert max(h["journal_bytes"] for h in seen) > 0
        assert max(h["oldest_unwritten_seconds"] for h in seen) > OUTAGE_SECONDS / 2
        assert max(h["in_memory"] for h in seen) < CALLS_PER_SECOND * 5
        assert journal.size == 0 and writer.backlog == 0
    finally:
        store.close()


async def test_a_connection_cut_after_commit_neither_wedges_nor_duplicates(
    own_postgres: PostgresServer, pg_url: str
) -> None:
    url = make_url(pg_url)
    proxy = CommitCutProxy(url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.start())
    store = InteractionStore(proxied, migrate=False)
    writer = RecordWriter(store, 0.01, HOOK)
    try:
        for n in range(10):
            writer.create(f"{n:032x}", profile="default", caller_channel=f"c{n}", caller_number="x")
        proxy.armed.set()
        assert await writer.flush() is False  # committed, but the client cannot know
        assert proxy.cuts == 1 and len(store.all()) == 10
        for n in range(10):
            writer.update(f"{n:032x}", state="resolved", outcome="resolved", ended_at=time.time())
        for n in range(10, 20):  # and the writer carries on
            writer.create(f"{n:032x}", profile="default", caller_channel=f"c{n}", caller_number="x")
            writer.update(f"{n:032x}", state="resolved", outcome="resolved", ended_at=time.time())
        assert await writer.flush() is True
        assert writer.backlog == 0 and writer.set_aside == 0
        assert_one_resolved_record_and_event_each(store, [f"{n:032x}" for n in range(20)])
    finally:
        store.close()
        proxy.stop()


def test_sqlite_on_a_full_file_system_logs_and_writes_once_space_returns(
    tmp_path: Path,
) -> None:
    """RLIMIT_FSIZE in a child process is the full disk: every file write past it fails."""
    db = tmp_path / "records.sqlite3"
    out = subprocess.run(
        [sys.executable, "-m", "tests.store.full_disk_child", str(db), str(tmp_path / "j")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["while_full"] is False and result["after"] is True
    logs = "\n".join(result["logs"])
    assert "writing 20 records failed (OperationalError" in logs  # EFBIG: "disk I/O error"
    assert caller_number(7) not in logs  # the statement's parameters are never logged
    store = InteractionStore(db, migrate=False)
    try:
        records = store.all()
        assert sorted(r["caller_number"] or "" for r in records) == [
            caller_number(n) for n in range(20)
        ]
    finally:
        store.close()


async def test_the_app_restarted_with_a_non_empty_journal_replays_it_first(
    own_postgres: PostgresServer, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "BOTBRIDGE_ARI_PASSWORD": "x",
        "BOTBRIDGE_STATE_DIR": str(tmp_path),
        "BOTBRIDGE_DATABASE_URL": pg_url,
    }
    config = load_config(env=env)
    own_postgres.halt()
    store = InteractionStore(pg_url, migrate=False)
    first = writer_for(store, config)
    for n in range(30):
        first.create(f"{n:032x}", profile="default", caller_channel=f"c{n}", state="queued")
    await first.close()  # the database is down: everything goes to the journal
    journal = config.state_path(config.store.journal_path)
    assert len(journal.read_text().splitlines()) == 30 and first.in_memory == 0
    store.close()

    own_postgres.resume()
    store = InteractionStore(pg_url, migrate=False)
    second = writer_for(store, load_config(env=env))  # the next start
    assert second.backlog == 30 and second.unwritten_seconds() >= 0
    caplog.set_level(logging.INFO, logger="ari_app.store")
    second.start()
    second.update(f"{0:032x}", state="resolved", outcome="resolved")  # newer than the journal
    try:
        assert await drained(second, 30)
    finally:
        await second.close()
    try:
        records = {r["interaction_id"]: r for r in store.all()}
        assert len(records) == 30 and journal.stat().st_size == 0
        assert records[f"{0:032x}"]["state"] == "resolved"
        assert {r["state"] for i, r in records.items() if i != f"{0:032x}"} == {"queued"}
        assert "replayed: 30 records written" in caplog.text
    finally:
        store.close()
