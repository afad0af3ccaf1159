"""Overload is explicit: above [limits] a new call is shed whole, on the wire and in the record.

A stack of its own with ``max_active_calls = 1``: one call is held by the bot, the next one
is over the limit. With ``overload_action = "fallback_queue"`` it reaches an agent without
ever meeting the bot; with ``"refuse"`` the carrier gets 503 (Q.850 cause 34). Either way the
record says ``overloaded`` with the limit that was hit, and the metric counts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import all_of, first, until
from tests.integration.test_metrics import scrape

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

HOLD_MS = "8000"  # the bot keeps the first call long enough for the second to arrive


def overloaded_stack(runtime: Runtime, action: str) -> DevStack:
    root = runtime.scratch_root() / f"test-overload-{action}-{uuid.uuid4().hex[:8]}"
    return build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_MAX_ACTIVE_CALLS": "1",
            "BOTBRIDGE_OVERLOAD_ACTION": action,
            "BOTBRIDGE_HTTP_PORT": str(free_port()),
        },
    )


@pytest.fixture(params=["fallback_queue", "refuse"])
def overloaded(request: pytest.FixtureRequest, runtime: Runtime) -> Iterator[DevStack]:
    stack = overloaded_stack(runtime, request.param)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def records(stack: DevStack) -> list[Record]:
    store = InteractionStore(stack.config.store.url)
    try:
        return store.all()
    finally:
        store.close()


def caller(stack: DevStack, scenario: str, number: str) -> SippRun:
    return stack.sipp().start(
        scenario,
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": number},
        timeout=30,
    )


async def test_a_call_over_the_limit_is_shed_whole(overloaded: DevStack) -> None:
    stack = overloaded
    refuse = stack.config.limits.overload_action == "refuse"
    sipp = stack.sipp()
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", HOLD_MS])
    agent = None if refuse else sipp.start("common/agent", local_port=stack.agent_port)
    first_caller = caller(stack, "common/caller_waits", "15550000001")
    await until(lambda: any(m.method == "INVITE" for m in bot.messages()), 10, "the bot's call")

    second = caller(
        stack, "overload/caller_refused" if refuse else "common/caller_waits", "15550000002"
    )
    assert second.wait(30) == 0, second.report()
    if refuse:
        response = first(second, status=503, direction="received")
        assert response.header("Reason") == "Q.850;cause=34", second.report()
    else:
        assert agent is not None
        assert agent.wait(30) == 0, agent.report()
        invite = first(agent, method="INVITE", direction="received")
        assert "sip:15550000002@" in (invite.header("From") or "")
        shed_iid = invite.header("X-Interaction-Id")
    assert first_caller.wait(30) == 0, first_caller.report()
    assert bot.wait(30) == 0, bot.report()
    # the bot only ever saw the call that was taken
    assert len(all_of(bot, "INVITE")) == 1, bot.report()

    def shed_record() -> Record | None:
        rows = [r for r in records(stack) if r["outcome"] == "overloaded"]
        return rows[0] if rows and rows[0]["ended_at"] else None

    row = await until(shed_record, 10, "the shed call's record, closed")
    assert row["error_reason"] == "max_active_calls"
    assert row["caller_number"] == "15550000002"
    assert row["bot_seconds"] == 0.0 and row["billable_minutes"] == 0.0
    if refuse:
        assert row["queue"] is None and row["state"] == "error"
    else:
        assert row["queue"] == "agents-queue" and row["state"] == "queued"
        assert row["interaction_id"] == shed_iid

    def taken() -> list[str | None]:
        outcomes = [r["outcome"] for r in records(stack) if r["outcome"] != "overloaded"]
        return outcomes if outcomes and all(outcomes) else []

    assert await until(taken, 10, "the taken call's outcome") == ["resolved"]

    samples = await scrape(stack)
    assert samples[("botbridge_calls_shed_total", (("reason", "max_active_calls"),))] == 1
    assert samples[("botbridge_call_outcomes_total", (("outcome", "overloaded"),))] == 1
