"""Schema migrations (Alembic, shipped in ari_app/store/migrations) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from ari_app.records import BotAttempt
from ari_app.store import InteractionStore, alembic_config, head_revisions, make_engine
from ari_app.store.schema import interactions
from tests.records import create, stored, update

HEAD = ("0009_answering_agent",)
FIRST = "0001_initial"
NEW_IN_0002 = {
    "node",
    "agent_channel",
    "agent_answered_at",
    "bot_ended_at",
    "reconciled_at",
    "bot_seconds",
    "billable_minutes",
    "billing_rounding",
}

# the table exactly as the first store (stdlib sqlite3, no Alembic) created it
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    interaction_id TEXT PRIMARY KEY, state TEXT NOT NULL, outcome TEXT, profile TEXT NOT NULL,
    dialled_number TEXT, caller_number TEXT, caller_channel TEXT NOT NULL, bot_channel TEXT,
    availability TEXT, escalate_to TEXT, queue TEXT, context_json TEXT, error_reason TEXT,
    started_at REAL NOT NULL, bot_answered_at REAL, transfer_at REAL, queued_at REAL,
    ended_at REAL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_started ON interactions(started_at);
"""


def columns(url: str) -> dict[str, bool]:
    """Column name -> nullable, as the database has it."""
    engine = make_engine(InteractionStore(url, migrate=False).url)
    try:
        return {c["name"]: c["nullable"] for c in inspect(engine).get_columns("interactions")}
    finally:
        engine.dispose()


def indexes(url: str) -> set[str]:
    engine = make_engine(InteractionStore(url, migrate=False).url)
    try:
        indexed = inspect(engine).get_indexes("interactions")
        return {name for i in indexed if (name := i["name"]) is not None}
    finally:
        engine.dispose()


def test_the_shipped_head() -> None:
    assert head_revisions() == HEAD


def test_upgrade_from_empty_matches_the_table(database_url: str) -> None:
    store = InteractionStore(database_url)
    try:
        assert store.revision() == HEAD
    finally:
        store.close()
    expected = {c.name: c.nullable for c in interactions.columns}
    expected["interaction_id"] = False
    assert columns(database_url) == expected
    assert indexes(database_url) >= {"interactions_started", "interactions_open"}


def test_upgrade_is_idempotent(database_url: str) -> None:
    store = InteractionStore(database_url)
    try:
        create(store, "i1", profile="default", caller_channel="c", started_at=1.5)
        store.upgrade()  # the fast path: already at head
        with store.engine.begin() as connection:  # and Alembic itself, twice
            command.upgrade(alembic_config(connection), "head")
            command.upgrade(alembic_config(connection), "head")
        again = InteractionStore(database_url)
        assert again.revision() == HEAD
        assert stored(again, "i1")["started_at"] == 1.5
        again.close()
    finally:
        store.close()


def test_downgrade_and_upgrade_keep_the_records(database_url: str) -> None:
    store = InteractionStore(database_url)
    try:
        create(store, "i1", profile="default", caller_channel="c", queue="q", bot_seconds=3.0)
        store.downgrade(FIRST)
        assert store.revision() == (FIRST,)
        assert not NEW_IN_0002 & set(columns(database_url))
        store.upgrade()
        assert store.revision() == HEAD
        row = store.get("i1")
        assert row is not None and row["queue"] == "q"
        assert row["bot_seconds"] is None  # dropped with its column, empty when re-added
    finally:
        store.close()


def test_bot_choice_columns_come_and_go_with_0003(database_url: str) -> None:
    store = InteractionStore(database_url)
    try:
        tried: list[BotAttempt] = [{"uri": "sip:a@127.0.0.1", "result": "bot_busy"}]
        create(
            store, "i1", profile="default", caller_channel="c", bot_uri="sip:b@h", bots_tried=tried
        )
        assert store.get("i1") is not None
        row = stored(store, "i1")
        assert row["bot_uri"] == "sip:b@h" and json.loads(row["bots_tried"] or "") == tried
        store.downgrade("0002_record_fields")
        assert not {"bot_uri", "bots_tried"} & set(columns(database_url))
        store.upgrade()
        row = store.get("i1") or {}
        assert row["profile"] == "default" and row["bot_uri"] is None  # kept, column re-added empty
    finally:
        store.close()


def test_the_answering_agent_column_comes_and_goes_with_0009(database_url: str) -> None:
    store = InteractionStore(database_url)
    try:
        create(store, "i1", profile="default", caller_channel="c", agent="alice")
        assert stored(store, "i1")["agent"] == "alice"
        store.downgrade("0008_headers")
        assert "agent" not in set(columns(database_url))
        store.upgrade()
        row = store.get("i1") or {}
        assert row["profile"] == "default" and row["agent"] is None
    finally:
        store.close()


def test_concurrent_first_starts_migrate_once(database_url: str) -> None:
    """Several nodes starting at once on an empty database: one upgrades, the others wait
    for it and find the schema at head."""
    errors: list[BaseException] = []
    stores: list[InteractionStore] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        try:
            barrier.wait()
            stores.append(InteractionStore(database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert not errors, errors
        assert [s.revision() for s in stores] == [HEAD] * 4
    finally:
        for store in stores:
            store.close()


OPEN_AT = """
import sys, time
from ari_app.records import BotAttempt
from ari_app.store import InteractionStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # a start barrier for all processes
print(",".join(InteractionStore(sys.argv[1]).revision()))
"""


def test_concurrent_first_starts_in_several_processes(database_url: str) -> None:
    """Several app processes (nodes) starting at once on an empty database."""
    start_at = str(time.time() + 2.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, database_url, start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == ",".join(HEAD)


def test_a_database_of_the_first_store_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "interactions.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(LEGACY_SCHEMA)
    db.execute(
        "INSERT INTO interactions (interaction_id, state, outcome, profile, caller_channel,"
        " context_json, started_at, queued_at, updated_at) VALUES"
        " ('old', 'queued', 'escalated', 'default', 'c1', '{\"a\": \"b\"}', 10, 12, 12)"
    )
    db.commit()
    db.close()

    store = InteractionStore(path)  # a plain path, as the first store took
    try:
        assert store.revision() == HEAD
        row = store.get("old")
        assert row is not None
        assert row["outcome"] == "escalated" and row["context"] == {"a": "b"}
        assert row["ended_at"] is None and row["agent_answered_at"] is None
        assert row["node"] is None  # reconciled by whichever node owns the file
        update(store, "old", ended_at=20.0, reconciled_at=20.0)
        assert stored(store, "old")["ended_at"] == 20.0
    finally:
        store.close()
    assert set(columns(f"sqlite:///{path}")) >= NEW_IN_0002


def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = InteractionStore(tmp_path / "wal.sqlite3")
    store.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'wal.sqlite3'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_only_known_backends_are_configurable(url: str) -> None:
    from ari_app.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"store\.url"):
        load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_DATABASE_URL": url})
