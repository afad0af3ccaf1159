"""Database URLs and engines: SQLite in WAL mode with ``synchronous=FULL``, or a pooled
server (PostgreSQL through psycopg 3)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_SECONDS = 30
# pause between attempts to switch a new SQLite database to WAL while another connection has it
SQLITE_WAL_RETRY_SECONDS = 0.05


def database_url(value: str | Path | URL) -> URL:
    """A SQLAlchemy URL from a URL or a plain SQLite file path (``":memory:"`` too)."""
    if isinstance(value, URL):
        url = value
    elif isinstance(value, Path) or "://" not in value:
        path = str(value)
        url = make_url("sqlite://" if path == ":memory:" else f"sqlite:///{Path(path).resolve()}")
    else:
        url = make_url(value)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


# errors never show the bound parameters (caller numbers, bot context): they reach the logs
HIDE_PARAMETERS = True


def make_engine(url: URL) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with a busy timeout, or a pooled server."""
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                hide_parameters=HIDE_PARAMETERS,
            )
        else:  # one shared in-memory database for every thread
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False},
                poolclass=StaticPool,
                hide_parameters=HIDE_PARAMETERS,
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=HIDE_PARAMETERS
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] not in {"memory", "wal"}:
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """PRAGMA journal_mode=WAL, retried: the switch needs the database to itself, and SQLite
    answers "database is locked" at once (no busy timeout) while another connection, e.g.
    a second node's first start, holds it."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(SQLITE_WAL_RETRY_SECONDS)
