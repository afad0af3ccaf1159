"""Warm transfer (RFC 5589 section 7) through a real Asterisk 22 with SIPp as caller, bot and
agent: the bot consults an agent in a call of its own, then REFERs the caller with Replaces
naming the consult; the caller ends up with that agent, both bot dialogs end. A consult
without an agent, a consult naming no call, and a Replaces naming another call's dialog
leave the caller with its bot.

The stack's file turns warm transfer on for two profiles: ``default`` (the bot on the
stack's bot port) and ``other`` (number 5553000, a bot of its own), and defines the queue
``warm-nobody`` (no member, ``join_empty = "yes"``: a consult there waits
``consult_timeout_seconds``, then TIMEOUT).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from ari_app.records import Record
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SipMessage, SippRun
from devtools.stack import free_port
from tests.harness import first, until
from tests.integration.test_call_flow import decode_uui_header
from tests.integration.test_headers import ended_record

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

CONSULT_TIMEOUT = 3
NOBODY_QUEUE = "warm-nobody"
OTHER_NUMBER = "5553000"
CASE_HEADER = "X-Case-Number"
CALL_TIMEOUT = 40
# the bots' consult calls answer a digest challenge ([bridge] consult_auth_username)
CONSULT_USER = "warmbot"


def consult_uui(escalate_to: str) -> str:
    context = f"escalate_to={escalate_to};summary=card lost"
    return f"User-to-User: {context.encode().hex()};encoding=hex"


@pytest.fixture(scope="module")
def warm_stack(runtime: Runtime) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-warm-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "warm.toml"
    other_bot = free_port(udp_too=True)
    config.write_text(
        f'[bridge]\nconsult_auth_username = "{CONSULT_USER}"\n'
        "[routing]\n"
        'agents-queue = "agents-queue"\n'
        f'nobody = "{NOBODY_QUEUE}"\n'
        "[profiles.default]\n"
        "warm_transfer = true\n"
        f"consult_timeout_seconds = {CONSULT_TIMEOUT}\n"
        f'bot_headers = ["{CASE_HEADER}"]\n'
        "[profiles.other]\n"
        'bot_endpoint = "voicebot"\n'
        f'bot_uri = "sip:voicebot@127.0.0.1:{other_bot}"\n'
        "answer_timeout_seconds = 4\n"
        'fallback_queue = "agents-queue"\n'
        'default_queue = "agents-queue"\n'
        'availability_queue = "agents-queue"\n'
        "warm_transfer = true\n"
        f'[queues.{NOBODY_QUEUE}]\njoin_empty = "yes"\nleave_when_empty = "no"\n'
        f'[[routes]]\npattern = "{OTHER_NUMBER}"\nprofile = "other"\n'
        '[[routes]]\npattern = "_X."\nprofile = "default"\n'
    )
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": str(config),
            "BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4",
        },
    )
    stack.other_bot_port = other_bot  # type: ignore[attr-defined]
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def checked_stack(warm_stack: DevStack) -> DevStack:
    return warm_stack


def caller(stack: DevStack, service: str = "5551000") -> SippRun:
    return stack.sipp().start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=service,
        keys={"caller_number": "15550001111"},
    )


def warm_bot(
    stack: DevStack,
    *,
    escalate_to: str = "agents-queue",
    talk_ms: int = 1000,
    foreign: tuple[str, str, str] = ("", "", ""),
    iid_suffix: str = "",
    password: str | None = None,
) -> SippRun:
    """The warm-transferring bot (tests/scenarios/warm/bot.xml); ``foreign`` (Call-ID,
    to-tag, from-tag) names another dialog than its consult in its Replaces."""
    keys = {
        "consult_user": "consult",
        "consult_headers": f"{consult_uui(escalate_to)}\r\n{CASE_HEADER}: 4711",
        "iid_suffix": iid_suffix,
        "consult_auth_user": CONSULT_USER,
        "consult_auth_password": consult_password(stack) if password is None else password,
        "foreign_call": foreign[0],
        "foreign_to": foreign[1],
        "foreign_from": foreign[2],
    }
    return stack.sipp().start(
        "warm/bot", local_port=stack.bot_port, keys=keys, extra=["-aa", "-d", str(talk_ms)]
    )


def final_notify(bot: SippRun) -> SipMessage:
    """The NOTIFY that ended the bot's REFER subscription (its sipfrag: the result)."""
    notifies = [m for m in bot.messages() if m.method == "NOTIFY" and m.direction == "received"]
    final = [m for m in notifies if "terminated" in (m.header("Subscription-State") or "")]
    assert len(final) == 1, bot.report()
    return final[0]


def consult_password(stack: DevStack) -> str:
    """The password the bridge made for consult calls (bridge.consult_password_file)."""
    return stack.config.state_path(stack.config.bridge.consult_password_file).read_text().strip()


async def talking_call(stack: DevStack) -> str:
    """The interaction id of the one call whose bot leg is up, once it is (read from ARI)."""

    async def answered() -> str | None:
        async with stack.rest() as ari:
            legs = [c for c in await ari.channels() if c.id.startswith("bot-")]
        return legs[0].id.removeprefix("bot-") if legs and legs[0].state == "Up" else None

    return await until(answered, 10, "a bot answered")


def finished(*runs: SippRun) -> None:
    for run in runs:
        run.wait(CALL_TIMEOUT)
    report = "".join(run.report() for run in runs)
    assert all(run.returncode == 0 for run in runs), report


async def test_warm_transfer_joins_the_caller_to_the_consulted_agent(
    warm_stack: DevStack,
) -> None:
    """Consult answered by the agent, REFER with Replaces naming it: NOTIFY 200, BYE on both
    bot dialogs, the caller with the agent until the agent hangs up; the agent's INVITE (the
    consult's) carries the interaction id, the consult's context and the bot's header; the
    record says escalated by warm transfer."""
    agent = warm_stack.sipp().start(
        "common/agent", local_port=warm_stack.agent_port, extra=["-d", "4000"]
    )
    bot = warm_bot(warm_stack)
    call = caller(warm_stack)
    finished(call, bot, agent)
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    assert iid
    # the consult answered the bridge's digest challenge
    consults = [m for m in bot.messages() if m.method == "INVITE" and m.direction == "sent"]
    assert [m.header("Authorization") is not None for m in consults] == [False, True]
    assert f'username="{CONSULT_USER}"' in (consults[1].header("Authorization") or "")
    assert first(bot, status=401, direction="received", cseq="INVITE")
    invites = [m for m in agent.messages() if m.method == "INVITE" and m.direction == "received"]
    assert len(invites) == 1, agent.report()
    invite = invites[0]
    assert invite.header("X-Interaction-Id") == iid
    assert decode_uui_header(invite.header("User-to-User") or "") == (
        "escalate_to=agents-queue;summary=card lost"
    )
    assert invite.header(CASE_HEADER) == "4711"
    assert "SIP/2.0 200" in final_notify(bot).body
    leg = first(bot, method="INVITE", direction="received").header("Call-ID")
    byes = [m for m in bot.messages() if m.method == "BYE" and m.direction == "received"]
    assert sorted(m.header("Call-ID") or "" for m in byes) == sorted(
        [leg or "", f"consult///{leg}"]
    )
    row = await ended_record(warm_stack, iid)
    assert row["outcome"] == "escalated" and row["queue"] == "agents-queue"
    assert row["escalate_to"] == "agents-queue"
    assert json.loads(row["bot_headers"] or "{}") == {CASE_HEADER: "4711"}
    attempts = json.loads(row["escalations"] or "[]")
    assert [(a["target"], a["via"], a["result"]) for a in attempts] == [
        ("agents-queue", "warm_transfer", "answered")
    ]
    answered, transfer, ended = row["agent_answered_at"], row["transfer_at"], row["ended_at"]
    assert answered and transfer and ended and answered < transfer < ended
    # the caller stayed with the agent after the transfer: the agent hung up 4 s after its
    # answer, 1 s of which was the bot's briefing
    assert ended - transfer >= 2, row
    assert row["bot_dialogs"] == 1 and row["bot_seconds"]


async def test_a_consult_without_an_agent_leaves_the_caller_with_the_bot(
    warm_stack: DevStack,
) -> None:
    """The consult's queue has nobody: after consult_timeout_seconds the consult gets 480,
    the bot still has the caller and ends the call; the failed attempt is in the record."""
    bot = warm_bot(warm_stack, escalate_to="nobody")
    call = caller(warm_stack)
    finished(call, bot)
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    assert iid
    assert first(bot, status=480, direction="received", cseq="INVITE")
    assert not [m for m in bot.messages() if m.method == "REFER"]
    row = await ended_record(warm_stack, iid)
    attempts = json.loads(row["escalations"] or "[]")
    assert [(a["target"], a["via"], a["result"]) for a in attempts] == [
        (NOBODY_QUEUE, "consult", "timeout")
    ]
    assert attempts[0]["wait_seconds"] >= CONSULT_TIMEOUT - 0.5
    assert row["outcome"] == "escalation_failed" and row["agent_answered_at"] is None
    assert row["bot_ended_at"] and row["bot_answered_at"]
    assert row["bot_ended_at"] - row["bot_answered_at"] >= CONSULT_TIMEOUT


async def test_a_consult_naming_no_call_is_refused(warm_stack: DevStack) -> None:
    """A consult whose interaction id names no live call gets 403; the bot keeps its
    caller (and ends the call: resolved, no escalation attempt)."""
    bot = warm_bot(warm_stack, iid_suffix="0")
    call = caller(warm_stack)
    finished(call, bot)
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    assert iid
    assert first(bot, status=403, direction="received", cseq="INVITE")
    row = await ended_record(warm_stack, iid)
    assert row["outcome"] == "resolved"
    assert json.loads(row["escalations"] or "[]") == []


async def test_a_consult_with_the_wrong_password_is_refused(warm_stack: DevStack) -> None:
    """A consult whose digest answer is wrong is challenged again and never reaches the app;
    the bot keeps its caller and ends the call (resolved, no escalation attempt)."""
    bot = warm_bot(warm_stack, password="not-the-password")
    call = caller(warm_stack)
    finished(call, bot)
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    assert iid
    challenges = [m for m in bot.messages() if m.status == 401 and m.direction == "received"]
    assert len(challenges) == 2, bot.report()
    assert not [
        m
        for m in bot.messages()
        if m.status == 200 and m.cseq_method == "INVITE" and m.direction == "received"
    ]
    row = await ended_record(warm_stack, iid)
    assert row["outcome"] == "resolved"
    assert json.loads(row["escalations"] or "[]") == []


async def test_a_consult_from_an_address_that_is_no_bot_is_refused(
    warm_stack: DevStack,
) -> None:
    """An address that is no bot (127.0.0.2: no carrier, bot or agent) calls the consult
    address with a live call's interaction id: refused before it reaches the app; the call
    goes on with its bot and ends resolved, without an attempt."""
    bot = warm_stack.sipp().start(
        "bot_resolves/bot", local_port=warm_stack.bot_port, extra=["-d", "4000"]
    )
    call = caller(warm_stack)

    iid = await talking_call(warm_stack)
    consults_before = warm_stack.app_log_text().count("consult PJSIP")
    stranger = warm_stack.sipp().start(
        "warm/stranger_consult",
        local_ip="127.0.0.2",
        local_port=free_port(udp_too=True),
        remote=warm_stack.sip_remote,
        keys={"consult_user": "consult", "iid": iid},
    )
    finished(stranger, call, bot)
    answers = [m.status for m in stranger.messages() if m.direction == "received"]
    assert answers and answers[-1] in {401, 403, 404}, stranger.report()
    # no consult reached the app (each one it sees is logged, taken or refused)
    assert warm_stack.app_log_text().count("consult PJSIP") == consults_before
    row = await ended_record(warm_stack, iid)
    assert row["outcome"] == "resolved" and json.loads(row["escalations"] or "[]") == []


async def bot_leg_dialog(stack: DevStack, interaction_id: str) -> tuple[str, str, str]:
    """(Call-ID, Asterisk's tag, the bot's tag) of a call's live bot leg, read from ARI."""
    async with stack.rest() as ari:
        channel = f"bot-{interaction_id}"
        call_id = await ari.get_var(channel, "CHANNEL(pjsip,call-id)")
        local = await ari.get_var(channel, "CHANNEL(pjsip,local_tag)")
        remote = await ari.get_var(channel, "CHANNEL(pjsip,remote_tag)")
    assert call_id and local and remote
    return call_id, local, remote


async def test_a_replaces_naming_another_calls_dialog_is_declined(
    warm_stack: DevStack,
) -> None:
    """Call A talks to its bot (profile ``other``). Call B's bot consults an agent, then
    REFERs with Replaces naming call A's bot dialog: NOTIFY 603, nothing joined; call B's
    caller stays with its bot, which ends the consult and the call; call A goes on with its
    bot and ends resolved, untouched."""
    other_port = warm_stack.other_bot_port  # type: ignore[attr-defined]
    bot_a = warm_stack.sipp().start("bot_resolves/bot", local_port=other_port, extra=["-d", "9000"])
    call_a = caller(warm_stack, OTHER_NUMBER)

    iid_a = await talking_call(warm_stack)
    dialog = await bot_leg_dialog(warm_stack, iid_a)
    agent = warm_stack.sipp().start("warm/agent_waits", local_port=warm_stack.agent_port)
    # Replaces: to-tag is the tag of the dialog's recipient (Asterisk), from-tag the bot's
    bot_b = warm_bot(warm_stack, foreign=dialog)
    call_b = caller(warm_stack)
    finished(call_b, bot_b, agent, call_a, bot_a)
    iid_b = first(bot_b, method="INVITE", direction="received").header("X-Interaction-Id")
    assert iid_b and iid_b != iid_a
    assert "SIP/2.0 603" in final_notify(bot_b).body
    row_b = await ended_record(warm_stack, iid_b)
    assert row_b["outcome"] == "resolved", row_b
    attempts = json.loads(row_b["escalations"] or "[]")
    assert [(a["via"], a["result"]) for a in attempts] == [("consult", "answered")]
    row_a: Record = await ended_record(warm_stack, iid_a)
    assert row_a["outcome"] == "resolved" and json.loads(row_a["escalations"] or "[]") == []
    assert row_a["bot_ended_at"] and row_a["bot_answered_at"]
    assert row_a["bot_ended_at"] - row_a["bot_answered_at"] >= 8.5  # its whole talk
