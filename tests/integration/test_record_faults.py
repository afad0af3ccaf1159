"""The store's database stopped under calls: the real app, Asterisk and SIPp on PostgreSQL.

A stack of its own on a throwaway PostgreSQL server. Calls arrive at 20 calls/s for 40 s, the
bot answers and hangs up (outcome ``resolved``); 5 s in, the server is stopped for 30 s, then
started again. Every call must complete for its SIPp parties and end with exactly one
resolved record: the record writer kept the outage's changes in its journal and wrote them
once the database was back (docs/records.md, "When the database fails").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from tests.harness import load_callers, sipp_finished, until
from tests.postgres import PostgresServer, stoppable_postgres

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

RATE = 20  # calls/s
BEFORE_SECONDS, OUTAGE_SECONDS, AFTER_SECONDS = 5, 30, 5
CALLS = RATE * (BEFORE_SECONDS + OUTAGE_SECONDS + AFTER_SECONDS)
BOT_TALK_MS = 1000
PREFIX = "1999"
UNWRITABLE_AFTER_SECONDS = 5  # [store] unwritable_after_seconds of this stack


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from stoppable_postgres()


@pytest.fixture(scope="module")
def pg_stack(runtime: Runtime, postgres: PostgresServer) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-record-faults-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "botbridge.toml"
    config.write_text(f"[store]\nunwritable_after_seconds = {UNWRITABLE_AFTER_SECONDS}\n")
    env = {"BOTBRIDGE_DATABASE_URL": postgres.create_database(), "BOTBRIDGE_CONFIG": str(config)}
    stack = build_stack(runtime, root, free_ports=True, extra_env=env)
    stack.start()
    yield stack
    stack.stop()


async def test_postgres_stopped_for_30_s_under_20_calls_per_second_loses_no_record(
    pg_stack: DevStack, postgres: PostgresServer
) -> None:
    stack = pg_stack
    bot = stack.sipp().start(
        "load/bot_resolve",
        local_port=stack.bot_port,
        extra=["-aa", "-d", str(BOT_TALK_MS)],
        calls=CALLS,
        timeout=180,
    )
    callers = load_callers(stack, calls=CALLS, rate=RATE, prefix=PREFIX, timeout=180)
    await asyncio.sleep(BEFORE_SECONDS)
    await asyncio.to_thread(postgres.halt)
    await asyncio.sleep(UNWRITABLE_AFTER_SECONDS * 3)
    status, reasons = await readiness(stack)
    assert status == 503 and "records_unwritable" in reasons, (status, reasons)
    await asyncio.sleep(OUTAGE_SECONDS - UNWRITABLE_AFTER_SECONDS * 3)
    await asyncio.to_thread(postgres.resume)
    for run in (callers, bot):
        await sipp_finished(run, 180)
        assert run.wait(1) == 0, run.report()[-3000:]

    store = InteractionStore(stack.config.store.url, migrate=False)
    try:

        def complete() -> list[Record] | None:
            rows = [r for r in store.all() if (r["caller_number"] or "").startswith(PREFIX)]
            done = len(rows) >= CALLS and all(r["ended_at"] for r in rows)
            return rows if done else None

        rows = await until(complete, 60, f"{CALLS} ended records")
    finally:
        store.close()
    assert len(rows) == CALLS
    assert len({r["caller_number"] for r in rows}) == CALLS  # one record per call
    assert {r["outcome"] for r in rows} == {"resolved"}
    log = stack.app_log_text()
    assert "kept in the journal" in log and "replayed" in log
    assert await until(lambda: _ready(stack), 30, "/readyz 200 again")


async def readiness(stack: DevStack) -> tuple[int, list[str]]:
    """/readyz's status and reasons."""
    url = f"http://{stack.config.http.host}:{stack.config.http.port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status, list((await reply.json()).get("reasons", []))


async def _ready(stack: DevStack) -> bool:
    return (await readiness(stack))[0] == 200
