"""Correctness under concurrency: a short SIPp load through the real stack, both flows mixed.

300 calls at 30 calls/s: half dial a number whose bot hangs up after 1 s (resolved), half a
number whose bot REFERs after 1 s with a context (escalated to the agent). Asserted: every
SIPp party saw every call succeed, the event socket never reconnected, and the records match
the wire exactly, call by call (outcome, queue, context, interaction id). No timing is
asserted; speed is `make bench`'s job.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import load_callers, sipp_finished, until
from tests.integration.test_call_flow import SEED_ESCALATION_HEX
from tests.integration.test_metrics import scrape

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CALLS_PER_FLOW = 150
RATE_PER_FLOW = 15  # calls/s; both flows together: 30 calls/s
BOT_TALK_MS = 1000
AGENT_TALK_MS = 500
RESOLVE_NUMBER = "5551000"
ESCALATE_NUMBER = "6661000"
SIPP_TIMEOUT = 120


@pytest.fixture(scope="module")
def loaded(runtime: Runtime) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-load-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    escalating_bot = free_port(udp_too=True)
    config = root / "botbridge.toml"
    # a second profile whose bot (its own SIPp) transfers; one agent contact stands for a
    # pool of agents, so the queue rings it while it is on another call
    config.write_text(
        f"""
[bridge]
agent_ring_in_use = true

[profiles.escalating]
bot_endpoint = "voicebot"
bot_uri = "sip:voicebot@127.0.0.1:{escalating_bot}"
answer_timeout_seconds = 10
fallback_queue = "agents-queue"
default_queue = "agents-queue"
availability_queue = "agents-queue"

[[routes]]
pattern = "{ESCALATE_NUMBER}"
profile = "escalating"

[[routes]]
pattern = "_X."
profile = "default"
"""
    )
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config), "BOTBRIDGE_HTTP_PORT": str(free_port())},
    )
    stack.escalating_bot_port = escalating_bot  # type: ignore[attr-defined]
    stack.start()
    yield stack
    stack.stop()


def load_party(
    stack: DevStack, scenario: str, port: int, *, keys: dict[str, str], extra: list[str]
) -> SippRun:
    return stack.sipp().start(
        f"load/{scenario}",
        local_port=port,
        keys=keys,
        extra=["-aa", *extra],
        calls=CALLS_PER_FLOW,
        timeout=SIPP_TIMEOUT,
    )


def all_records(stack: DevStack) -> list[Record]:
    store = InteractionStore(stack.config.store.url)
    try:
        return store.all()
    finally:
        store.close()


async def test_mixed_load_fails_no_call_and_the_records_match_the_wire(loaded: DevStack) -> None:
    stack = loaded
    before = await scrape(stack)
    agent = load_party(stack, "agent", stack.agent_port, keys={}, extra=["-d", str(AGENT_TALK_MS)])
    resolver = load_party(
        stack, "bot_resolve", stack.bot_port, keys={}, extra=["-d", str(BOT_TALK_MS)]
    )
    escalator = load_party(
        stack,
        "bot_refer",
        stack.escalating_bot_port,  # type: ignore[attr-defined]
        keys={
            "refer_user": "escalation",
            "refer_headers": f"?User-to-User={SEED_ESCALATION_HEX}%3Bencoding%3Dhex",
        },
        extra=["-d", str(BOT_TALK_MS)],
    )
    resolving_callers = load_callers(
        stack,
        calls=CALLS_PER_FLOW,
        rate=RATE_PER_FLOW,
        prefix="1555",
        service=RESOLVE_NUMBER,
        timeout=SIPP_TIMEOUT,
    )
    escalating_callers = load_callers(
        stack,
        calls=CALLS_PER_FLOW,
        rate=RATE_PER_FLOW,
        prefix="2555",
        service=ESCALATE_NUMBER,
        timeout=SIPP_TIMEOUT,
    )

    for run in (resolving_callers, escalating_callers, resolver, escalator, agent):
        await sipp_finished(run, SIPP_TIMEOUT)
        assert run.wait(1) == 0, run.report()[-3000:]

    # the wire: who called whom, with which interaction id
    bot_ids = {
        "resolved": invites_by_caller(resolver, "1555"),
        "escalated": invites_by_caller(escalator, "2555"),
    }
    agent_ids = invites_by_caller(agent, "2555")
    assert len(bot_ids["resolved"]) == len(bot_ids["escalated"]) == CALLS_PER_FLOW
    assert agent_ids == bot_ids["escalated"]  # every escalated caller reached the agent

    def settled() -> list[Record] | None:
        rows = all_records(stack)
        done = len(rows) == 2 * CALLS_PER_FLOW and all(r["ended_at"] for r in rows)
        return rows if done else None

    rows = await until(settled, 30, "every record closed")
    by_id = {r["interaction_id"]: r for r in rows}
    assert Counter(r["outcome"] for r in rows) == {
        "resolved": CALLS_PER_FLOW,
        "escalated": CALLS_PER_FLOW,
    }
    for outcome, ids in bot_ids.items():
        for caller_number, iid in ids.items():
            row = by_id[iid]
            assert row["outcome"] == outcome, row
            assert row["caller_number"] == caller_number, row
            assert row["bot_answered_at"] and row["bot_seconds"] is not None, row
            if outcome == "escalated":
                assert row["queue"] == "agents-queue" and row["escalate_to"] == "agents-queue"
                assert row["context"] == {"escalate_to": "agents-queue"}
                assert row["error_reason"] is None and row["agent_answered_at"], row

    after = await scrape(stack)
    assert (
        after[("botbridge_ari_reconnects_total", ())]
        == before[("botbridge_ari_reconnects_total", ())]
    )
    assert "reconnecting" not in stack.app_log_text()


def invites_by_caller(run: SippRun, prefix: str) -> dict[str, str]:
    """Caller number -> X-Interaction-Id of every INVITE this party received."""
    found: dict[str, str] = {}
    for msg in run.messages():
        if msg.method != "INVITE" or msg.direction != "received":
            continue
        number = (msg.header("From") or "").split("sip:", 1)[-1].split("@", 1)[0]
        iid = msg.header("X-Interaction-Id")
        assert number.startswith(prefix) and iid, msg.describe()
        found[number] = iid
    return found
