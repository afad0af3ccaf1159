"""Correctness under concurrency: a short SIPp load through the real stack, the flows mixed.

400 calls at 40 calls/s, a quarter per flow: a number whose bot hangs up after 1 s
(resolved), a number whose bot REFERs after 1 s with a context (escalated to the agent), a
number whose bot REFERs to a queue nobody is in (the escalation fails at once, JOINEMPTY),
gets the caller back in a new dialog (same interaction id, ``escalation=failed``) and REFERs
it to the agent, and a number whose bot warm-transfers (consults the agent, then REFERs with
Replaces naming the consult). The default profile copies carrier headers (Diversion,
P-Asserted-Identity) with its verstat header and context keys. Asserted: every SIPp party
saw every call succeed, the event socket never reconnected, and the records match the wire
exactly, call by call (outcome, queue, context, interaction id, the escalation attempts, the
verstat). No timing is asserted; speed is `make bench`'s job.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from ari_app.records import Record, stored_escalations
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import load_callers, sipp_finished, until
from tests.integration.test_call_flow import SEED_ESCALATION_HEX, decode_uui_header
from tests.integration.test_handoff import refer_headers
from tests.integration.test_metrics import scrape
from tests.records import all_stored

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CALLS_PER_FLOW = 100
RATE_PER_FLOW = 10  # calls/s; the four flows together: 40 calls/s
BOT_TALK_MS = 1000
# the warm-transferring bot talks this long, then briefs the agent as long: less than the
# agent stays (AGENT_TALK_MS), so every consult is still up when its REFER comes
WARM_BOT_MS = 200
AGENT_TALK_MS = 500
RESOLVE_NUMBER = "5551000"
ESCALATE_NUMBER = "6661000"
RETURN_NUMBER = "7771000"
WARM_NUMBER = "4441000"
# a queue without members whose strict joinempty refuses every caller at once (JOINEMPTY)
CLOSED_QUEUE = "load-closed"
SIPP_TIMEOUT = 120


@pytest.fixture(scope="module")
def loaded(runtime: Runtime) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-load-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    escalating_bot = free_port(udp_too=True)
    returning_bot = free_port(udp_too=True)
    warm_bot = free_port(udp_too=True)
    config = root / "botbridge.toml"
    # a second profile whose bot (its own SIPp) transfers; one agent contact stands for a
    # pool of agents, so the queue rings it while it is on another call
    config.write_text(
        f"""
[bridge]
agent_ring_in_use = true

[profiles.default]
carrier_headers = ["Diversion", "P-Asserted-Identity"]
context_keys = ["dialled", "caller", "verstat", "agents_available", "estimated_wait"]
verstat_header = "X-Verstat"

[profiles.escalating]
bot_endpoint = "voicebot"
bot_uri = "sip:voicebot@127.0.0.1:{escalating_bot}"
answer_timeout_seconds = 10
fallback_queue = "agents-queue"
default_queue = "agents-queue"
availability_queue = "agents-queue"

[profiles.returning]
bot_endpoint = "voicebot"
bot_uri = "sip:voicebot@127.0.0.1:{returning_bot}"
answer_timeout_seconds = 10
fallback_queue = "agents-queue"
default_queue = "agents-queue"
availability_queue = "agents-queue"

[profiles.warm]
bot_endpoint = "voicebot"
bot_uri = "sip:voicebot@127.0.0.1:{warm_bot}"
answer_timeout_seconds = 10
fallback_queue = "agents-queue"
default_queue = "agents-queue"
availability_queue = "agents-queue"
warm_transfer = true

[routing]
agents-queue = "agents-queue"
closed = "{CLOSED_QUEUE}"

[queues.{CLOSED_QUEUE}]
join_empty = "unavailable,invalid,unknown"
leave_when_empty = "unavailable,invalid,unknown"

[[routes]]
pattern = "{ESCALATE_NUMBER}"
profile = "escalating"

[[routes]]
pattern = "{RETURN_NUMBER}"
profile = "returning"

[[routes]]
pattern = "{WARM_NUMBER}"
profile = "warm"

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
    stack.returning_bot_port = returning_bot  # type: ignore[attr-defined]
    stack.warm_bot_port = warm_bot  # type: ignore[attr-defined]
    stack.start()
    yield stack
    stack.stop()


def load_party(
    stack: DevStack,
    scenario: str,
    port: int,
    *,
    keys: dict[str, str],
    extra: list[str],
    calls: int = CALLS_PER_FLOW,
) -> SippRun:
    return stack.sipp().start(
        scenario if "/" in scenario else f"load/{scenario}",
        local_port=port,
        keys=keys,
        extra=["-aa", *extra],
        calls=calls,
        timeout=SIPP_TIMEOUT,
    )


def all_records(stack: DevStack) -> list[Record]:
    return all_stored(stack.config.store.url)


async def test_mixed_load_fails_no_call_and_the_records_match_the_wire(loaded: DevStack) -> None:
    stack = loaded
    before = await scrape(stack)
    agent = load_party(
        stack,
        "agent",
        stack.agent_port,
        keys={},
        extra=["-d", str(AGENT_TALK_MS)],
        calls=3 * CALLS_PER_FLOW,  # the escalated, the returned, the warm consults
    )
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
    returner = load_party(
        stack,
        "handoff/bot",
        stack.returning_bot_port,  # type: ignore[attr-defined]
        keys={
            "refer_user": "escalation",
            "refer_headers": refer_headers("closed"),
            "return_refer_headers": refer_headers("agents-queue"),
        },
        extra=["-d", str(BOT_TALK_MS)],
        calls=2 * CALLS_PER_FLOW,  # two dialogs per call
    )
    warm = load_party(
        stack,
        "warm/bot",
        stack.warm_bot_port,  # type: ignore[attr-defined]
        keys={
            "consult_user": "consult",
            "consult_headers": f"User-to-User: {SEED_ESCALATION_HEX};encoding=hex",
            "iid_suffix": "",
            "foreign_call": "",
            "foreign_to": "",
            "foreign_from": "",
            "consult_auth_user": "",
            "consult_auth_password": "",
        },
        extra=["-d", str(WARM_BOT_MS)],
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

    returning_callers = load_callers(
        stack,
        calls=CALLS_PER_FLOW,
        rate=RATE_PER_FLOW,
        prefix="3555",
        service=RETURN_NUMBER,
        timeout=SIPP_TIMEOUT,
    )
    warm_callers = load_callers(
        stack,
        calls=CALLS_PER_FLOW,
        rate=RATE_PER_FLOW,
        prefix="4555",
        service=WARM_NUMBER,
        timeout=SIPP_TIMEOUT,
    )
    parties = (resolving_callers, escalating_callers, returning_callers, warm_callers)
    for run in (*parties, resolver, escalator, warm, returner, agent):
        await sipp_finished(run, SIPP_TIMEOUT)
        assert run.wait(1) == 0, run.report()[-3000:]

    # the wire: who called whom, with which interaction id
    bot_ids = {
        "resolved": invites_by_caller(resolver, "1555"),
        "escalated": invites_by_caller(escalator, "2555"),
    }
    # the resolving profile copies the carrier's headers: every bot INVITE has them
    for msg in (m for m in resolver.messages() if m.method == "INVITE"):
        assert (msg.header("Diversion") or "").endswith(";reason=unconditional"), msg.describe()
        assert msg.header("X-Verstat") == "TN-Validation-Passed", msg.describe()
    returned = received_invites(returner, "3555")
    agent_ids = invites_by_caller(agent, "2555")
    assert len(bot_ids["resolved"]) == len(bot_ids["escalated"]) == CALLS_PER_FLOW
    assert agent_ids == bot_ids["escalated"]  # every escalated caller reached the agent
    # every returning caller: two bot dialogs with one interaction id, the second saying why,
    # then the agent
    assert len(returned) == CALLS_PER_FLOW
    failed = f"escalation=failed;reason=no_agents;queue={CLOSED_QUEUE}"
    for invites in returned.values():
        # business_hours as the call's first dialog was told it (under load: available or
        # busy, as the agent's state was when the call came in)
        (first_iid, first_context), (second_iid, second_context) = invites
        assert first_context.startswith("business_hours=") and ";" not in first_context
        assert second_context == f"{first_context};{failed}" and second_iid == first_iid
    return_ids = {number: invites[0][0] for number, invites in returned.items()}
    assert invites_by_caller(agent, "3555") == return_ids

    # every warm-transferred caller: the agent got the consult (its INVITE, the interaction
    # id of the bot's call); both bot dialogs of each call ended by the bridge's BYEs
    warm_ids = invites_by_caller(warm, "4555")
    assert len(warm_ids) == CALLS_PER_FLOW
    consulted = {m.header("X-Interaction-Id") for m in agent.messages() if m.method == "INVITE"}
    assert set(warm_ids.values()) <= consulted
    warm_byes = [m for m in warm.messages() if m.method == "BYE" and m.direction == "received"]
    assert len(warm_byes) == 2 * CALLS_PER_FLOW

    def settled() -> list[Record] | None:
        rows = all_records(stack)
        done = len(rows) == 4 * CALLS_PER_FLOW and all(r["ended_at"] for r in rows)
        return rows if done else None

    rows = await until(settled, 30, "every record closed")
    by_id = {r["interaction_id"]: r for r in rows}
    assert Counter(r["outcome"] for r in rows) == {
        "resolved": CALLS_PER_FLOW,
        "escalated": 3 * CALLS_PER_FLOW,
    }
    for outcome, ids in bot_ids.items():
        for caller_number, iid in ids.items():
            row = by_id[iid]
            assert row["outcome"] == outcome, row
            assert row["caller_number"] == caller_number, row
            assert row["bot_answered_at"] and row["bot_seconds"] is not None, row
            assert row["verstat"] == "TN-Validation-Passed", row
            if outcome == "escalated":
                assert row["queue"] == "agents-queue" and row["escalate_to"] == "agents-queue"
                assert row["context"] == {"escalate_to": "agents-queue"}
                assert row["error_reason"] is None and row["agent_answered_at"], row

    for caller_number, iid in return_ids.items():
        row = by_id[iid]
        assert row["caller_number"] == caller_number and row["bot_dialogs"] == 2, row
        attempts = [(a["target"], a["via"], a["result"]) for a in stored_escalations(row)]
        assert attempts == [
            (CLOSED_QUEUE, "refer", "no_agents"),
            ("agents-queue", "refer", "answered"),
        ], row

    for caller_number, iid in warm_ids.items():
        row = by_id[iid]
        assert row["caller_number"] == caller_number and row["outcome"] == "escalated", row
        attempts = [(a["target"], a["via"], a["result"]) for a in stored_escalations(row)]
        assert attempts == [("agents-queue", "warm_transfer", "answered")], row
        assert row["context"] == {"escalate_to": "agents-queue"}, row
        answered, transfer = row["agent_answered_at"], row["transfer_at"]
        assert answered and transfer and answered <= transfer, row

    after = await scrape(stack)
    assert (
        after[("botbridge_ari_reconnects_total", ())]
        == before[("botbridge_ari_reconnects_total", ())]
    )
    assert "reconnecting" not in stack.app_log_text()


def invites_by_caller(run: SippRun, prefix: str) -> dict[str, str]:
    """Caller number -> X-Interaction-Id of every INVITE this party received from a caller
    numbered ``<prefix>...``."""
    return {number: invites[-1][0] for number, invites in received_invites(run, prefix).items()}


def received_invites(run: SippRun, prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Caller number -> (X-Interaction-Id, decoded User-to-User or "") of each INVITE this
    party received from a caller numbered ``<prefix>...``, in order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for msg in run.messages():
        if msg.method != "INVITE" or msg.direction != "received":
            continue
        number = (msg.header("From") or "").split("sip:", 1)[-1].split("@", 1)[0]
        if not number.startswith(prefix):
            continue
        iid = msg.header("X-Interaction-Id")
        assert iid, msg.describe()
        uui_header = msg.header("User-to-User")
        context = decode_uui_header(uui_header) if uui_header else ""
        found.setdefault(number, []).append((iid, context))
    return found
