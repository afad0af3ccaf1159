"""Fail open: with the app down, callers still reach a human, and the app records them later.

A stack of its own: the app is killed (SIGKILL), ten calls arrive at 2 calls/s, each one
must reach the agent with an interaction id; once the app is back, each is recorded with
outcome ``bypassed`` (reason ``app_unavailable``) under the id the agent saw.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from ari_app.connect import event_stream
from ari_app.records import Record
from ari_app.reporting.aggregation import report_from_store
from ari_app.reporting.periods import Period
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import Sipp, SippRun
from devtools.stack import free_port
from tests.harness import load_callers, until

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CALLS = 10
RATE = 2  # calls/s
AGENT_TALK_MS = 500


@pytest.fixture(scope="module")
def lonely(runtime: Runtime) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-always-on-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "botbridge.toml"
    config.write_text("[bridge]\nagent_ring_in_use = true\n")
    stack = build_stack(runtime, root, free_ports=True, extra_env={"BOTBRIDGE_CONFIG": str(config)})
    stack.start()
    yield stack
    stack.stop()


def records(stack: DevStack) -> list[Record]:
    store = InteractionStore(stack.config.store.url)
    try:
        return store.all()
    finally:
        store.close()


async def finished(run: SippRun, timeout: float) -> int:
    await until(lambda: not run.running, timeout, f"SIPp {run.name} to finish")
    return run.wait(1)


async def test_calls_while_the_app_is_down_reach_an_agent_and_are_recorded(
    lonely: DevStack,
) -> None:
    stack = lonely
    assert stack.app_proc is not None
    stack.app_proc.kill()  # SIGKILL: the Stasis app is no longer registered
    stack.app_proc.wait()

    agent = stack.sipp().start(
        "load/agent",
        local_port=stack.agent_port,
        extra=["-aa", "-d", str(AGENT_TALK_MS)],
        calls=CALLS,
        timeout=60,
    )
    callers = load_callers(stack, calls=CALLS, rate=RATE, prefix="1888", timeout=60)
    assert await finished(callers, 60) == 0, callers.report()[-3000:]
    assert await finished(agent, 30) == 0, agent.report()[-3000:]

    # every caller reached the agent, with an interaction id made by the dialplan
    seen: dict[str, str] = {}
    for msg in agent.messages():
        if msg.method == "INVITE" and msg.direction == "received":
            number = (msg.header("From") or "").split("sip:", 1)[-1].split("@", 1)[0]
            iid = msg.header("X-Interaction-Id") or ""
            assert re.fullmatch(r"[0-9a-f]{32}", iid), msg.describe()
            seen[number] = iid
    assert len(seen) == CALLS and len(set(seen.values())) == CALLS

    stack.start_app()  # back: it records what happened meanwhile

    def bypassed() -> list[Record] | None:
        rows = [r for r in records(stack) if r["outcome"] == "bypassed"]
        return rows if len(rows) == CALLS else None

    rows = await until(bypassed, 20, f"{CALLS} bypassed records")
    assert {r["caller_number"]: r["interaction_id"] for r in rows} == seen
    for row in rows:
        assert row["error_reason"] == "app_unavailable" and row["queue"] == "agents-queue"
        assert row["dialled_number"] == "5551000" and row["state"] == "queued"
        assert row["ended_at"] is not None and row["ended_at"] >= row["started_at"]
        assert row["reconciled_at"] is not None

    # the report counts them
    today = datetime.now(UTC).date().isoformat()
    store = InteractionStore(stack.config.store.url)
    try:
        report = report_from_store(store, Period.parse(today, today), "day")
    finally:
        store.close()
    assert report.total.outcomes["bypassed"] == CALLS

    # the notes in AstDB are gone: a second reconnect records nothing twice
    async with stack.rest() as ari:
        assert await ari.get_global_var("DB_KEYS(botbridge_bypassed)") in (None, "")
        assert await ari.get_global_var("DB_KEYS(botbridge_bypassed_end)") in (None, "")


DRAIN_SECONDS = 2


async def restart_app_with(stack: DevStack, **env: str) -> None:
    stack.stop_app()
    stack.env.update(env)
    stack.start_app()


def waiting_caller(stack: DevStack, sipp: Sipp, number: str) -> SippRun:
    """A caller from ``number`` to the bot service that waits for the far end's BYE."""
    return sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": number},
        timeout=40,
    )


async def bot_connected(stack: DevStack, number: str) -> dict[str, Any]:
    def connected() -> Record | None:
        rows = [r for r in records(stack) if r["caller_number"] == number]
        return rows[0] if rows and rows[0]["state"] == "bot_connected" else None

    return dict(await until(connected, 15, f"the call from {number} with the bot"))


def terminate(stack: DevStack) -> int:
    """SIGTERM, and the exit code once the app is gone (it must go by itself)."""
    assert stack.app_proc is not None
    stack.app_proc.terminate()
    return stack.app_proc.wait(timeout=DRAIN_SECONDS + 15)


@pytest.mark.parametrize(
    ("bot_talk_ms", "outcome", "reason"),
    [(1000, "resolved", None), (8000, "error", "drain_timeout")],
    ids=["bot-finishes", "handed-to-queue"],
)
async def test_sigterm_drains_calls_with_the_bot_and_exits_0(
    lonely: DevStack, bot_talk_ms: int, outcome: str, reason: str | None
) -> None:
    stack = lonely
    await restart_app_with(stack, BOTBRIDGE_DRAIN_SECONDS=str(DRAIN_SECONDS))
    number = f"1999{bot_talk_ms}"
    sipp = stack.sipp()
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", str(bot_talk_ms)])
    agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "500"])
    caller = waiting_caller(stack, sipp, number)
    row = await bot_connected(stack, number)
    assert terminate(stack) == 0, stack.app_log_text()[-2000:]

    assert await finished(caller, 30) == 0, caller.report()
    final = next(r for r in records(stack) if r["interaction_id"] == row["interaction_id"])
    assert final["outcome"] == outcome and final["error_reason"] == reason, final
    if outcome == "error":  # handed to the fallback queue: the agent got the call
        assert await finished(agent, 20) == 0, agent.report()
        invites = [m for m in agent.messages() if m.method == "INVITE"]
        assert invites and invites[0].header("X-Interaction-Id") == row["interaction_id"]
    else:
        agent.stop()
    bot.stop()
    stack.start_app()


RESTART_RATE = 20  # calls/s
RESTART_CALLS = 200


async def test_rolling_restart_under_load_drops_no_caller(lonely: DevStack) -> None:
    """`make restart` (DevStack.restart_app: SIGTERM drain, a new app, ready on /readyz) in
    the middle of 20 calls/s: every caller is answered and released (by the bot, or by an
    agent after failing open), and every call has a closed record."""
    stack = lonely
    await restart_app_with(stack, BOTBRIDGE_DRAIN_SECONDS="30")
    sipp = stack.sipp()
    # the bot and the agent take whatever part of the load reaches them
    bot = sipp.start(
        "load/bot_resolve",
        local_port=stack.bot_port,
        extra=["-aa", "-d", "1000"],
        calls=RESTART_CALLS,
        timeout=60,
    )
    agent = sipp.start(
        "load/agent",
        local_port=stack.agent_port,
        extra=["-aa", "-d", str(AGENT_TALK_MS)],
        calls=RESTART_CALLS,
        timeout=60,
    )
    callers = load_callers(stack, calls=RESTART_CALLS, rate=RESTART_RATE, prefix="1777", timeout=60)
    await until(lambda: len(records(stack)) >= RESTART_CALLS // 4, 20, "the load under way")
    stack.restart_app()
    assert await finished(callers, 60) == 0, callers.report()[-3000:]

    def closed() -> list[Record] | None:
        rows = [r for r in records(stack) if (r["caller_number"] or "").startswith("1777")]
        done = len(rows) == RESTART_CALLS and all(r["ended_at"] and r["outcome"] for r in rows)
        return rows if done else None

    rows = await until(closed, 30, f"{RESTART_CALLS} closed records")
    bot.stop()
    agent.stop()
    outcomes = {r["outcome"] for r in rows}
    assert outcomes <= {"resolved", "bypassed"}, outcomes
    assert "resolved" in outcomes


async def test_a_caller_whose_stasis_start_was_never_handled_is_taken_up(
    lonely: DevStack,
) -> None:
    """The race of a stop: Asterisk put a caller into the app and sent its StasisStart just as
    the app's socket closed. Here a client that registers the app and reads nothing makes it
    happen every time. The next app finds the caller waiting and gives it the bot."""
    stack = lonely
    stack.stop_app()
    silent = event_stream(stack.config)
    listening = asyncio.create_task(silent.run(lambda event: None))
    await until(lambda: silent.connects >= 1, 10, "the silent client registered")
    number = "18880001"
    sipp = stack.sipp()
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", "1000"])
    caller = waiting_caller(stack, sipp, number)
    async with stack.rest() as ari:

        async def waiting() -> bool:
            return any(
                c.caller.number == number and c.dialplan.app_name == "Stasis"
                for c in await ari.channels()
            )

        await until(waiting, 15, "the caller waiting in the app")
    silent.stop()
    await listening
    assert not bot.messages(), "nothing may reach the bot before the app is back"
    stack.start_app()

    assert await finished(caller, 30) == 0, caller.report()
    assert await finished(bot, 10) == 0, bot.report()
    invite = next(m for m in bot.messages() if m.method == "INVITE")

    def ended() -> Record | None:
        rows = [r for r in records(stack) if r["caller_number"] == number]
        return rows[0] if len(rows) == 1 and rows[0]["ended_at"] else None

    row = await until(ended, 10, f"the record of {number} closed")
    assert row["interaction_id"] == invite.header("X-Interaction-Id")
    assert row["outcome"] == "resolved", row


async def readiness(stack: DevStack) -> int:
    url = f"http://{stack.config.http.host}:{stack.config.http.port}/readyz"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            return reply.status
    except aiohttp.ClientError:
        return 0


async def test_asterisk_killed_and_restarted_under_calls(lonely: DevStack) -> None:
    """Asterisk dies with calls up: /readyz goes 503, the app is ready again within 5 s of
    Asterisk's return, no record stays open, and a new call works at once."""
    stack = lonely
    sipp = stack.sipp()
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", "20000"], calls=3)
    callers = [waiting_caller(stack, sipp, f"1666{n}") for n in range(3)]
    for n in range(3):
        await bot_connected(stack, f"1666{n}")
    assert await readiness(stack) == 200

    stack.instance.kill()  # SIGKILL: the calls die with it
    await until(lambda: _status_is(stack, 503), 10, "/readyz 503 while Asterisk is gone")
    stack.instance.start()  # booted: ARI is listening again
    await until(lambda: _status_is(stack, 200), 5, "the app ready within 5 s of Asterisk")

    def all_closed() -> bool:
        rows = [r for r in records(stack) if (r["caller_number"] or "").startswith("1666")]
        return len(rows) == 3 and all(r["ended_at"] and r["outcome"] for r in rows)

    await until(all_closed, 10, "the calls' records closed by reconciliation")
    for run in (bot, *callers):
        run.stop()

    # a new call works at once
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", "500"])
    caller = waiting_caller(stack, sipp, "16669")
    assert await finished(caller, 30) == 0, caller.report()
    assert await finished(bot, 10) == 0, bot.report()


async def _status_is(stack: DevStack, status: int) -> bool:
    return await readiness(stack) == status
