"""A maximal report request through the real HTTP server does not stall the event loop.

The loop that serves HTTP is the one the ARI event reader and every call's handling run
on: while it is blocked, no ARI event is read (Asterisk drops a WebSocket that is not read).
A probe task sleeps ``PROBE_SECONDS`` again and again and records how late it wakes: the
event-loop lag. The test builds the same report twice over a store of ``RECORDS`` records,
over a period of ``MAX_PERIOD_DAYS`` days:

- *before*: ``build_report`` called on the loop (what the server did until reports moved to
  worker processes): the probe is late by about the whole build, which shows that the
  probe sees a blocked loop;
- *after*: ``GET /reports`` from the real server (two reports: the table's grouping and the
  daily chart, over the same records): the probe's worst lateness must stay a small share
  (``LAG_SHARE``) of that one build's time and of the request's duration. Built on the loop,
  as before, the request stalls it for about two builds.

The comparison is relative, not against a fixed time, so a slow machine does not decide it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from ari_app.config import load_config
from ari_app.records import RecordChange
from ari_app.reporting.aggregation import build_report, records_between
from ari_app.reporting.periods import MAX_PERIOD_DAYS, Period
from ari_app.reporting.web import settings_for, start_http_server
from ari_app.store import InteractionStore
from devtools.stack import free_port

RECORDS = 100_000
PROBE_SECONDS = 0.005
# the loop may be late by at most this share of the report's build (the lag before: ~1)
LAG_SHARE = 0.25
FIRST_DAY = datetime(2020, 1, 1, tzinfo=UTC)
OUTCOMES = ("resolved", "escalated", "bot_failed", "abandoned")


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractionStore]:
    """``RECORDS`` records spread evenly over ``MAX_PERIOD_DAYS`` days, written in one batch."""
    store = InteractionStore(tmp_path_factory.mktemp("load") / "interactions.sqlite3")
    step = MAX_PERIOD_DAYS * 86400 / RECORDS
    creates: dict[str, RecordChange] = {}
    for i in range(RECORDS):
        start = FIRST_DAY.timestamp() + i * step
        outcome = OUTCOMES[i % len(OUTCOMES)]
        escalated = outcome == "escalated"
        creates[f"call{i}"] = {
            "started_at": start,
            "profile": f"profile{i % 3}",
            "caller_channel": f"c{i}",
            "state": outcome,
            "outcome": outcome,
            "queue": "agents-queue" if escalated else None,
            "escalate_to": f"target{i % 7}" if escalated else None,
            "bot_answered_at": start + 1,
            "transfer_at": start + 30 if escalated else None,
            "ended_at": start + 90,
        }
    store.write_batch(creates, {})
    yield store
    store.close()


@dataclass
class Lag:
    worst: float = 0.0  # seconds


@asynccontextmanager
async def loop_lag() -> AsyncIterator[Lag]:
    """The worst lateness of a task sleeping ``PROBE_SECONDS`` at a time, while inside."""
    lag, stop = Lag(), asyncio.Event()

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(PROBE_SECONDS)
            lag.worst = max(lag.worst, loop.time() - before - PROBE_SECONDS)

    task = asyncio.create_task(probe())
    await asyncio.sleep(2 * PROBE_SECONDS)  # the probe is asleep: a stall now counts
    try:
        yield lag
    finally:
        await asyncio.sleep(2 * PROBE_SECONDS)  # the probe wakes and measures a last time
        stop.set()
        await task


async def test_a_maximal_report_does_not_stall_the_event_loop(
    tmp_path: Path, big_store: InteractionStore
) -> None:
    last_day = FIRST_DAY.date() + timedelta(days=MAX_PERIOD_DAYS - 1)
    period = Period(FIRST_DAY.date(), last_day, UTC)
    records = records_between(big_store, period.start_ts, period.end_ts)
    assert len(records) == RECORDS

    # before: the report built on the loop
    async with loop_lag() as before:
        started = time.perf_counter()
        on_loop = build_report(records, period, "queue")
        build_seconds = time.perf_counter() - started
    assert on_loop.total.total == RECORDS
    assert before.worst >= 0.5 * build_seconds, (before.worst, build_seconds)

    # the app's process holds no records: neither may this one while it measures the app
    del records, on_loop
    gc.collect()

    # after: the same period through the real server, which also builds the daily chart
    port = free_port()
    config = load_config(
        env={"BOTBRIDGE_STATE_DIR": str(tmp_path / "state"), "BOTBRIDGE_HTTP_PORT": str(port)}
    )
    settings = settings_for(config, big_store, metrics=None)  # as ari-app run makes them
    runner = await start_http_server(config, settings)
    try:
        async with aiohttp.ClientSession() as session, loop_lag() as after:
            started = time.perf_counter()
            async with session.get(
                f"http://127.0.0.1:{port}/reports",
                params={"from": str(period.first_day), "to": str(last_day), "group_by": "queue"},
                headers={"Authorization": f"Bearer {settings.token}"},
            ) as response:
                status, page = response.status, await response.text()
            request_seconds = time.perf_counter() - started
    finally:
        await runner.cleanup()
    assert status == 200
    assert f'<div class="v">{RECORDS}</div><div class="k">interactions</div>' in page
    figures = (after.worst, request_seconds, build_seconds)
    print(f"lag {after.worst:.3f} s in {request_seconds:.2f} s; one build {build_seconds:.3f} s")
    assert after.worst < LAG_SHARE * build_seconds, figures
    assert after.worst < LAG_SHARE * request_seconds, figures
