"""The handoff never strands a caller: when its queue ends without an agent, the caller goes
back to a bot of the same profile (same interaction id, a context saying why), and past
``max_escalation_returns`` to the overflow queue. Real Asterisk 22, SIPp caller, bot, agent.

The stack's file defines queues of its own (``[queues]``): ``handoff-wait`` (no member,
``join_empty = "yes"``: the caller waits ``queue_timeout_seconds``, then TIMEOUT),
``handoff-closed`` (no member, strict ``join_empty``: JOINEMPTY at once) and
``no-such-queue``, dropped from the rendered queues.conf once Asterisk runs (UNKNOWN). The
bot's context names them through the routing map.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from ari_app.asterisk.hold_music import NOTE_SECONDS as HOLD_NOTE_SECONDS
from ari_app.asterisk.hold_music import NOTES_HZ, REST_SECONDS
from ari_app.records import Record
from ari_app.sip import uui
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import all_of, drop_queue, first, sipp_finished, until
from tests.integration.test_call_flow import decode_uui_header, final_record
from tests.media import RtpListener, tone_share, ulaw_samples
from tests.records import all_stored

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

QUEUE_TIMEOUT = 3
WAIT_QUEUE = "handoff-wait"
CLOSED_QUEUE = "handoff-closed"
# defined in the file but dropped from the rendered queues.conf (an Asterisk not rendered
# again after [queues] changed): QUEUESTATUS=UNKNOWN
MISSING_QUEUE = "no-such-queue"
TOKEN = "handoff-test-token"
OVERFLOW_NUMBER = "5552000"
CALL_TIMEOUT = 40
BOT_TALK_MS = "1000"


def refer_headers(escalate_to: str) -> str:
    """Refer-To URI headers with ``escalate_to=<target>`` as hex User-to-User."""
    return f"?User-to-User={f'escalate_to={escalate_to}'.encode().hex()}%3Bencoding%3Dhex"


@pytest.fixture(scope="module")
def handoff_stack(runtime: Runtime) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-handoff-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "handoff.toml"
    overflow_bot = free_port(udp_too=True)
    # a second profile (its own bot) that overflows at once to a queue that fails too
    config.write_text(
        f"[bridge]\nqueue_timeout_seconds = {QUEUE_TIMEOUT}\n"
        "[routing]\n"
        'agents-queue = "agents-queue"\n'
        f'nobody = "{WAIT_QUEUE}"\n'
        f'closed = "{CLOSED_QUEUE}"\n'
        f'ghost = "{MISSING_QUEUE}"\n'
        "[profiles.default]\n"
        "max_escalation_returns = 1\n"
        'overflow_target = "agents-queue"\n'
        "[profiles.overflowing]\n"
        'bot_endpoint = "voicebot"\n'
        f'bot_uri = "sip:voicebot@127.0.0.1:{overflow_bot}"\n'
        "answer_timeout_seconds = 4\n"
        'fallback_queue = "agents-queue"\n'
        'default_queue = "agents-queue"\n'
        'availability_queue = "agents-queue"\n'
        'on_escalation_failure = "overflow"\n'
        f'overflow_target = "{CLOSED_QUEUE}"\n'
        f'[queues.{WAIT_QUEUE}]\njoin_empty = "yes"\nleave_when_empty = "no"\n'
        f'[queues.{CLOSED_QUEUE}]\njoin_empty = "unavailable,invalid,unknown"\n'
        'leave_when_empty = "unavailable,invalid,unknown"\n'
        f"[queues.{MISSING_QUEUE}]\n"
        f'[[routes]]\npattern = "{OVERFLOW_NUMBER}"\nprofile = "overflowing"\n'
        '[[routes]]\npattern = "_X."\nprofile = "default"\n'
    )
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": str(config),
            "BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4",
            "BOTBRIDGE_HTTP_PORT": str(free_port()),
            "BOTBRIDGE_HTTP_TOKEN": TOKEN,
        },
    )
    stack.overflow_bot_port = overflow_bot  # type: ignore[attr-defined]
    stack.start()
    drop_queue(stack, MISSING_QUEUE)
    yield stack
    stack.stop()


@pytest.fixture
def checked_stack(handoff_stack: DevStack) -> DevStack:
    return handoff_stack


async def escalate_twice(
    stack: DevStack, first_target: str, return_target: str
) -> tuple[SippRun, SippRun, SippRun]:
    """One call: the bot escalates to ``first_target``; when the caller comes back, the
    returned dialog escalates to ``return_target``."""
    sipp = stack.sipp()
    agent_run = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "1000"])
    bot = sipp.start(
        "handoff/bot",
        local_port=stack.bot_port,
        keys={
            "refer_user": "escalation",
            "refer_headers": refer_headers(first_target),
            "return_refer_headers": refer_headers(return_target),
        },
        calls=2,
        extra=["-d", BOT_TALK_MS],
    )
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": "15550002222"},
    )
    for run in (caller, bot, agent_run):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    return caller, bot, agent_run


def bot_invites(bot: SippRun) -> list[Any]:
    return [m for m in all_of(bot, "INVITE") if m.direction == "received"]


async def http_json(stack: DevStack, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{stack.config.http.port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def test_queue_timeout_returns_the_caller_to_the_bot_which_escalates_again(
    handoff_stack: DevStack,
) -> None:
    stack = handoff_stack
    _, bot, agent = await escalate_twice(stack, "nobody", "agents-queue")
    invites = bot_invites(bot)
    assert len(invites) == 2, bot.report()
    iid = invites[0].header("X-Interaction-Id")
    assert iid and invites[1].header("X-Interaction-Id") == iid
    assert decode_uui_header(invites[0].header("User-to-User") or "") == "business_hours=available"
    assert decode_uui_header(invites[1].header("User-to-User") or "") == (
        f"business_hours=available;escalation=failed;reason=timeout;queue={WAIT_QUEUE}"
    )
    # the returned dialog's REFER was taken like the first one's
    assert [n.body.splitlines()[0] for n in all_of(bot, "NOTIFY")][-1] == "SIP/2.0 200 OK"
    agent_invite = first(agent, method="INVITE", direction="received")
    assert agent_invite.header("X-Interaction-Id") == iid

    row = await final_record(stack, iid, "escalated")
    assert row["outcome"] == "escalated" and row["queue"] == "agents-queue"
    assert row["agent_answered_at"] and row["bot_dialogs"] == 2
    attempts = stored(row)
    assert [(a["target"], a["via"], a["result"]) for a in attempts] == [
        (WAIT_QUEUE, "refer", "timeout"),
        ("agents-queue", "refer", "answered"),
    ]
    assert QUEUE_TIMEOUT - 0.5 <= attempts[0]["wait_seconds"] <= QUEUE_TIMEOUT + 3
    assert attempts[1]["agent_answered_at"] == row["agent_answered_at"]
    # both bot dialogs are billed: each talked BOT_TALK_MS before its REFER
    assert row["bot_seconds"] >= 2 * int(BOT_TALK_MS) / 1000 - 0.2

    view = await http_json(stack, f"/interactions/{iid}")
    assert view["escalations"] == attempts
    events = [m["event"] for m in view["timeline"]]
    assert events.index("escalation_timeout") < events.index("agent_answered")
    assert view["context"] == {"escalate_to": "agents-queue"}
    # the report by queue counts each attempt for its own queue
    report = await http_json(stack, "/reports.json?group_by=queue")
    rows = {row["key"]: row for row in report["rows"]}
    waited = rows[WAIT_QUEUE]
    assert waited["queue_attempts"] >= 1 and waited["queue_answered_rate"] == 0.0
    answered = rows["agents-queue"]
    assert answered["queue_attempts"] >= 1 and answered["avg_speed_of_answer_seconds"] is not None


@pytest.mark.parametrize(("target", "queue"), [("closed", CLOSED_QUEUE), ("ghost", MISSING_QUEUE)])
async def test_no_agent_in_the_queue_returns_the_caller_at_once_with_no_agents(
    handoff_stack: DevStack, target: str, queue: str
) -> None:
    _, bot, _ = await escalate_twice(handoff_stack, target, "agents-queue")
    invites = bot_invites(bot)
    assert decode_uui_header(invites[1].header("User-to-User") or "") == (
        f"business_hours=available;escalation=failed;reason=no_agents;queue={queue}"
    )
    iid = invites[0].header("X-Interaction-Id") or ""
    row = await final_record(handoff_stack, iid, "escalated")
    attempts = stored(row)
    assert [(a["target"], a["result"]) for a in attempts] == [
        (queue, "no_agents"),
        ("agents-queue", "answered"),
    ]
    assert attempts[0]["wait_seconds"] < 1.0  # JOINEMPTY: nobody waited for the timeout


async def test_returns_over_the_limit_go_to_the_overflow_queue(handoff_stack: DevStack) -> None:
    # max_escalation_returns = 1: the second failure overflows to agents-queue, no third bot
    _, bot, agent = await escalate_twice(handoff_stack, "closed", "closed")
    invites = bot_invites(bot)
    assert len(invites) == 2
    iid = invites[0].header("X-Interaction-Id") or ""
    assert first(agent, method="INVITE", direction="received").header("X-Interaction-Id") == iid
    row = await final_record(handoff_stack, iid, "escalated")
    assert [(a["target"], a["via"], a["result"]) for a in stored(row)] == [
        (CLOSED_QUEUE, "refer", "no_agents"),
        (CLOSED_QUEUE, "refer", "no_agents"),
        ("agents-queue", "overflow", "answered"),
    ]
    assert row["outcome"] == "escalated" and row["queue"] == "agents-queue"


# one cycle of the generated hold tone (ari_app/asterisk/hold_music.py) and some: its
# second note (554.37 Hz, in no ringback tone of indications.conf) is in every window
async def test_a_failed_overflow_queue_ends_the_call_without_a_loop(
    handoff_stack: DevStack,
) -> None:
    """``on_escalation_failure = "overflow"``: the first failure goes to the overflow queue at
    once (no bot dialog), and a failure there ends the call: the operator's last resort."""
    stack = handoff_stack
    sipp = stack.sipp()
    bot = sipp.start(
        "escalate/bot",
        local_port=stack.overflow_bot_port,  # type: ignore[attr-defined]
        keys={"refer_user": "escalation", "refer_headers": refer_headers("closed")},
        extra=["-d", BOT_TALK_MS],
    )
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=OVERFLOW_NUMBER,
        keys={"caller_number": "15550004444"},
    )
    for run in (caller, bot):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    assert len(bot_invites(bot)) == 1  # never back to the bot
    assert first(caller, method="BYE", direction="received")
    iid = bot_invites(bot)[0].header("X-Interaction-Id") or ""
    row = await final_record(stack, iid, "escalation_failed")
    assert row["state"] == "escalation_failed" and row["profile"] == "overflowing"
    assert [(a["target"], a["via"], a["result"]) for a in stored(row)] == [
        (CLOSED_QUEUE, "refer", "no_agents"),
        (CLOSED_QUEUE, "overflow", "no_agents"),
    ]


HOLD_WINDOW_SECONDS = HOLD_NOTE_SECONDS * len(NOTES_HZ) + REST_SECONDS + 0.5
PCMU = 0
BLOCK_PACKETS = 5  # 100 ms blocks: 10 Hz resolution
TONE_SHARE = 0.2  # a pure tone gives about 0.5


async def test_the_caller_hears_hold_music_while_the_returned_bot_rings(
    handoff_stack: DevStack,
) -> None:
    """Never dead air: between the failed queue and the new bot's answer the caller's RTP
    carries the hold music (the returned dialog rings until the answer timeout, then the
    fallback queue takes the caller)."""
    stack = handoff_stack
    at_caller = await RtpListener.open(free_port(udp_too=True))
    try:
        sipp = stack.sipp()
        agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "500"])
        bot = sipp.start(
            "handoff/bot_returned_rings",
            local_port=stack.bot_port,
            keys={"refer_user": "escalation", "refer_headers": refer_headers("closed")},
            calls=2,
            extra=["-d", BOT_TALK_MS],
        )
        caller = sipp.start(
            "media/caller_listens",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={
                "caller_number": "15550003333",
                "sdp_port": str(at_caller.port),
                "payloads": str(PCMU),
            },
        )

        def returned_bot_ringing() -> Record | None:
            rows = [
                r for r in all_stored(stack.config.store.url) if r["caller_number"] == "15550003333"
            ]
            ringing = [
                r
                for r in rows
                if r["state"] == "bot_dialling" and (r["bot_channel"] or "").endswith("-2")
            ]
            return ringing[0] if ringing else None

        row = await until(returned_bot_ringing, 20, "the returned bot dialog ringing")
        before = len(at_caller.packets)
        await asyncio.sleep(HOLD_WINDOW_SECONDS)
        heard = at_caller.packets[before:]
        for run in (caller, bot, agent):
            await sipp_finished(run, CALL_TIMEOUT)
            assert run.wait(1) == 0, run.report()
    finally:
        at_caller.close()
    # 20 ms packets all through the window, and the hold tone's note in them (the bot's
    # ringing alone gives the caller Asterisk's ringback, 440+480 Hz, not this)
    assert len(heard) >= HOLD_WINDOW_SECONDS * 50 * 0.8, len(heard)
    pcm = [p.payload for p in heard if p.payload_type == PCMU]
    blocks = [
        ulaw_samples(b"".join(pcm[i : i + BLOCK_PACKETS]))
        for i in range(0, len(pcm), BLOCK_PACKETS)
    ]
    shares = [tone_share(block, NOTES_HZ[-1]) for block in blocks]
    assert max(shares) >= TONE_SHARE, [round(s, 3) for s in shares]
    final = await final_record(stack, row["interaction_id"], "escalated")
    assert [(a["target"], a["via"], a["result"]) for a in stored(final)] == [
        (CLOSED_QUEUE, "refer", "no_agents"),
        ("agents-queue", "bot_failed", "answered"),
    ]


def stored(row: dict[str, Any]) -> list[dict[str, Any]]:
    value = json.loads(row["escalations"] or "[]")
    assert isinstance(value, list)
    return value


def test_context_helper_matches_the_codec() -> None:
    header = refer_headers("nobody").split("=", 1)[1].replace("%3B", ";")
    context = uui.decode_uui_context(uui.parse_uui(header))
    assert context.as_dict() == {"escalate_to": "nobody"}
