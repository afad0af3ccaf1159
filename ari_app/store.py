"""Interaction records: one row per call, written at every state change.

SQLite (standard library) in WAL mode: a crash loses nothing already written. Writes are
small and synchronous; each is one short transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OUTCOMES = ("resolved", "escalated", "bot_failed", "abandoned", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    interaction_id     TEXT PRIMARY KEY,
    state              TEXT NOT NULL,
    outcome            TEXT,
    profile            TEXT NOT NULL,
    dialled_number     TEXT,
    caller_number      TEXT,
    caller_channel     TEXT NOT NULL,
    bot_channel        TEXT,
    availability       TEXT,
    escalate_to        TEXT,
    queue              TEXT,
    context_json       TEXT,
    error_reason       TEXT,
    started_at         REAL NOT NULL,
    bot_answered_at    REAL,
    transfer_at        REAL,
    queued_at          REAL,
    ended_at           REAL,
    updated_at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_started ON interactions(started_at);
"""

_COLUMNS = frozenset(
    {
        "state",
        "outcome",
        "profile",
        "dialled_number",
        "caller_number",
        "caller_channel",
        "bot_channel",
        "availability",
        "escalate_to",
        "queue",
        "context_json",
        "error_reason",
        "started_at",
        "bot_answered_at",
        "transfer_at",
        "queued_at",
        "ended_at",
    }
)


class InteractionStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def create(self, interaction_id: str, **fields: Any) -> None:
        now = time.time()
        fields.setdefault("started_at", now)
        fields.setdefault("state", "started")
        self._check(fields)
        names = ["interaction_id", *fields, "updated_at"]
        values = [interaction_id, *map(_encode, fields.values()), now]
        marks = ",".join("?" for _ in names)
        with self._tx() as db:
            db.execute(f"INSERT INTO interactions ({','.join(names)}) VALUES ({marks})", values)

    def update(self, interaction_id: str, **fields: Any) -> None:
        self._check(fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [*map(_encode, fields.values()), time.time(), interaction_id]
        with self._tx() as db:
            db.execute(
                f"UPDATE interactions SET {assignments}, updated_at = ? WHERE interaction_id = ?",
                values,
            )

    def get(self, interaction_id: str) -> dict[str, Any] | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM interactions WHERE interaction_id = ?", (interaction_id,)
            ).fetchone()
        return _decode(row) if row else None

    def open_interactions(self) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM interactions WHERE ended_at IS NULL").fetchall()
        return [_decode(r) for r in rows]

    def all(self) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM interactions ORDER BY started_at").fetchall()
        return [_decode(r) for r in rows]

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _check(fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise KeyError(f"unknown interaction fields: {sorted(unknown)}")
        outcome = fields.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    if record.get("context_json"):
        record["context"] = json.loads(record["context_json"])
    return record
