"""Every path of a call, on a real Asterisk 22 with SIPp as caller, bot and agent.

Each test asserts on what crossed the wire (the SIPp parties' traces), on what Asterisk did
(channel variables and the queue read through ARI) and on the interaction record; after each
test no channel or bridge may be left behind.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ari_app.ari import Channel
from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import all_of, first, queued_caller, until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

SEED_ESCALATION_HEX = "657363616c6174655f746f3d6167656e74732d7175657565"  # escalate_to=agents-queue
CALL_TIMEOUT = 40
MIN_RTP_PACKETS = 25  # half a second of 20 ms packets
BOT_TALK_MS = "1500"
AGENT_TALK_MS = "2000"
VARIABLES = (
    "INTERACTION_ID",
    "OUTCOME",
    "QUEUE",
    "ESCALATE_TO",
    "ERROR",
    "CONTEXT",
    "UUI",
    "PROFILE",
    "CTX_ESCALATE_TO",
    "CTX_NOTE",
)


def uui_in_refer_to(payload: str, *, hex_encoded: bool = True) -> str:
    """Refer-To URI headers carrying ``payload`` as User-to-User (percent-encoded)."""
    if hex_encoded:
        return f"?User-to-User={payload.encode().hex()}%3Bencoding%3Dhex"
    return "?User-to-User=" + payload.replace("=", "%3D").replace(";", "%3B").replace("&", "%26")


@dataclass
class Call:
    caller: SippRun
    bot: SippRun | None
    agent: SippRun | None
    queued: Channel | None
    variables: dict[str, str | None]

    def wait(self) -> None:
        for run in (self.caller, self.bot, self.agent):
            if run is not None:
                run.wait(CALL_TIMEOUT)

    def report(self) -> str:
        return "\n".join(r.report() for r in (self.caller, self.bot, self.agent) if r)

    def assert_parties_ok(self) -> None:
        for run in (self.caller, self.bot, self.agent):
            if run is not None:
                assert run.returncode == 0, self.report()

    @property
    def interaction_id(self) -> str:
        assert self.bot is not None
        value = first(self.bot, method="INVITE", direction="received").header("X-Interaction-Id")
        assert value, self.report()
        return value


async def place_call(
    stack: DevStack,
    bot_scenario: str | None,
    *,
    bot_keys: dict[str, str] | None = None,
    bot_extra: tuple[str, ...] = ("-d", BOT_TALK_MS),
    expect_queue: bool = True,
    caller_scenario: str = "common/caller_waits",
    caller_extra: tuple[str, ...] = (),
    service: str = "5551000",
) -> Call:
    sipp = stack.sipp()
    agent = (
        sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", AGENT_TALK_MS])
        if expect_queue
        else None
    )
    bot = (
        sipp.start(
            bot_scenario, local_port=stack.bot_port, keys=bot_keys or {}, extra=list(bot_extra)
        )
        if bot_scenario
        else None
    )
    caller = sipp.start(
        caller_scenario,
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=service,
        keys={"caller_number": "15550001111"},
        extra=list(caller_extra),
    )
    queued = None
    variables: dict[str, str | None] = {}
    if expect_queue:
        async with stack.rest() as ari:
            queued = await until(lambda: queued_caller(ari), 25, "the caller in Queue()")
            for name in VARIABLES:
                variables[name] = await ari.get_var(queued.id, f"BOTBRIDGE_{name}")
    call = Call(caller, bot, agent, queued, variables)
    call.wait()
    return call


async def place_seed_escalation(stack: DevStack) -> Call:
    """The seed's escalation: the bot REFERs to ``escalation`` with
    ``escalate_to=agents-queue`` as hex User-to-User in the Refer-To; an agent answers."""
    return await place_call(
        stack,
        "escalate/bot",
        bot_keys={
            "refer_user": "escalation",
            "refer_headers": f"?User-to-User={SEED_ESCALATION_HEX}%3Bencoding%3Dhex",
        },
    )


def record(stack: DevStack, interaction_id: str) -> Record:
    store = InteractionStore(stack.config.store.url)
    try:
        row = store.get(interaction_id)
    finally:
        store.close()
    assert row is not None, f"no record for {interaction_id}"
    return row


async def final_record(stack: DevStack, interaction_id: str, outcome: str) -> dict[str, Any]:
    def done() -> Record | None:
        row = record(stack, interaction_id)
        # final: the outcome is decided and the caller's channel is gone
        return row if row["outcome"] == outcome and row["ended_at"] else None

    return dict(await until(done, 10, f"record {interaction_id} with outcome {outcome}, ended"))


def decode_uui_header(value: str) -> str:
    data, _, params = value.partition(";")
    assert params.lower() == "encoding=hex", value
    return bytes.fromhex(data).decode()


# -- the escalation path -------------------------------------------------------------------


async def test_escalation_carries_context_both_ways(stack: DevStack) -> None:
    call = await place_seed_escalation(stack)
    call.assert_parties_ok()
    iid = call.interaction_id
    assert re.fullmatch(r"[0-9a-f]{32}", iid)

    # bot leg: context out, caller id, REFER accepted, NOTIFY sipfrag 100 then 200, BYE
    assert call.bot is not None
    invite = first(call.bot, method="INVITE", direction="received")
    assert decode_uui_header(invite.header("User-to-User") or "") == "business_hours=available"
    assert "sip:15550001111@" in (invite.header("From") or "")
    assert first(call.bot, status=202, direction="received").cseq_method == "REFER"
    notifies = all_of(call.bot, "NOTIFY")
    assert [n.body.splitlines()[0] for n in notifies] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert all(n.header("Event") == "refer" for n in notifies)
    assert first(call.bot, status=200, direction="received", cseq="BYE")

    # caller: the queue the routing map chose, and the variables
    assert call.queued is not None
    assert (call.queued.dialplan.app_data or "").startswith("agents-queue,")
    assert call.variables["OUTCOME"] == "escalated"
    assert call.variables["QUEUE"] == "agents-queue"
    assert call.variables["ESCALATE_TO"] == "agents-queue"
    assert call.variables["CTX_ESCALATE_TO"] == "agents-queue"
    assert call.variables["INTERACTION_ID"] == iid
    assert call.variables["ERROR"] in (None, "")

    # the human agent receives the context
    assert call.agent is not None
    agent_invite = first(call.agent, method="INVITE", direction="received")
    assert (
        decode_uui_header(agent_invite.header("User-to-User") or "") == "escalate_to=agents-queue"
    )
    assert agent_invite.header("X-Escalate-To") == "agents-queue"
    assert agent_invite.header("X-Interaction-Id") == iid
    assert first(call.caller, method="BYE", direction="received")

    row = await final_record(stack, iid, "escalated")
    assert row["queue"] == "agents-queue"
    assert row["escalate_to"] == "agents-queue"
    assert row["context"] == {"escalate_to": "agents-queue"}
    assert row["bot_answered_at"] and row["transfer_at"] and row["queued_at"]
    assert row["caller_number"] == "15550001111" and row["dialled_number"] == "5551000"
    # followed through the queue: the agent answered, then the call ended
    assert row["bot_answered_at"] < row["transfer_at"] <= row["queued_at"]
    assert row["queued_at"] < row["agent_answered_at"] < row["ended_at"]
    assert row["agent_channel"] and row["agent_channel"] != row["caller_channel"]
    # billable: bot answer -> REFER, every started minute
    assert row["bot_ended_at"] == row["transfer_at"]
    assert row["bot_seconds"] == pytest.approx(
        row["transfer_at"] - row["bot_answered_at"], abs=1e-3
    )
    assert row["billable_minutes"] == 1.0 and row["billing_rounding"] == "ceil_minute"


async def test_a_transfer_channel_not_yet_answered_is_released_at_once(stack: DevStack) -> None:
    """The app releases the transfer's Local channel as soon as the caller is on its way to
    the queue, answered or not: the bot was told 200 when Asterisk made the channel
    (refer_blind_progress = no). Here the [botbridge-transfer] half waits 3 s before its
    Answer(), so the channel is still ringing when the app handles the REFER; left alone,
    it would live 3 s + transfer_hold_seconds."""
    pattern = "_[+0-9a-zA-Z*#]!"
    stack.instance.cli(
        f"dialplan add extension {pattern},1,Wait(3) into botbridge-transfer replace"
    )
    try:
        shown = stack.instance.cli("dialplan show botbridge-transfer").stdout
        assert "Wait(3)" in shown, shown
        call = await place_seed_escalation(stack)
        async with stack.rest() as ari:
            # the call is over on every party's side; the transfer channels went with it
            left = [c.name for c in await ari.channels()]
    finally:
        stack.instance.cli("dialplan reload")
    call.assert_parties_ok()
    assert not [name for name in left if name.startswith("Local/")], left
    assert call.bot is not None
    notifies = all_of(call.bot, "NOTIFY")
    assert [n.body.splitlines()[0] for n in notifies] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert call.variables["QUEUE"] == "agents-queue"
    assert call.agent is not None
    agent_invite = first(call.agent, method="INVITE", direction="received")
    assert agent_invite.header("X-Escalate-To") == "agents-queue"
    row = await final_record(stack, call.interaction_id, "escalated")
    assert row["agent_answered_at"] and row["error_reason"] is None


async def test_plain_text_context_routes_through_the_map(stack: DevStack) -> None:
    call = await place_call(
        stack,
        "escalate/bot",
        bot_keys={
            "refer_user": "escalation",
            "refer_headers": uui_in_refer_to("escalate_to=billing&order=A-1234", hex_encoded=False),
        },
    )
    call.assert_parties_ok()
    assert call.queued is not None
    assert (call.queued.dialplan.app_data or "").startswith("billing-queue,")
    assert call.variables["QUEUE"] == "billing-queue"
    assert call.variables["ESCALATE_TO"] == "billing"
    assert call.agent is not None
    agent_invite = first(call.agent, method="INVITE", direction="received")
    assert agent_invite.header("X-Escalate-To") == "billing"
    assert decode_uui_header(agent_invite.header("User-to-User") or "") == (
        "escalate_to=billing;order=A-1234"
    )


async def test_context_in_a_header_of_the_refer(stack: DevStack) -> None:
    call = await place_call(
        stack,
        "escalate_header/bot",
        bot_keys={
            "refer_user": "escalation",
            "refer_uui": b"escalate_to=billing".hex() + ";encoding=hex",
        },
    )
    call.assert_parties_ok()
    assert call.bot is not None
    refer = first(call.bot, method="REFER", direction="sent")
    assert "?" not in (refer.header("Refer-To") or "")
    assert call.variables["QUEUE"] == "billing-queue"
    assert call.variables["ESCALATE_TO"] == "billing"
    assert call.variables["OUTCOME"] == "escalated"


async def test_unknown_target_goes_to_the_default_queue(stack: DevStack) -> None:
    call = await place_call(
        stack,
        "escalate/bot",
        bot_keys={
            "refer_user": "escalation",
            "refer_headers": uui_in_refer_to("escalate_to=sales"),
        },
    )
    call.assert_parties_ok()
    assert call.variables["QUEUE"] == "agents-queue"
    assert call.variables["ESCALATE_TO"] == "sales"
    assert call.variables["ERROR"] == "escalate_to_unknown"
    row = await final_record(stack, call.interaction_id, "escalated")
    assert row["error_reason"] == "escalate_to_unknown"


BAD_CONTEXTS = {
    "context_too_large": "?User-to-User="
    + ("escalate_to=agents-queue;pad=" + "x" * 300).encode().hex()
    + "%3Bencoding%3Dhex",
    "context_malformed": "?User-to-User=zz6a%3Bencoding%3Dhex",
    "context_malformed_odd": "?User-to-User=657%3Bencoding%3Dhex",
    "context_not_utf8": "?User-to-User=fffe6162%3Bencoding%3Dhex",
    "context_missing": "",
}


@pytest.mark.parametrize("case", sorted(BAD_CONTEXTS))
async def test_bad_context_still_reaches_a_human(stack: DevStack, case: str) -> None:
    call = await place_call(
        stack,
        "escalate/bot",
        bot_keys={"refer_user": "escalation", "refer_headers": BAD_CONTEXTS[case]},
    )
    call.assert_parties_ok()
    reason = case.removesuffix("_odd")
    assert call.queued is not None
    assert (call.queued.dialplan.app_data or "").startswith("agents-queue,")
    assert call.variables["OUTCOME"] == "escalated"
    assert call.variables["ERROR"] == reason
    assert call.variables["ESCALATE_TO"] in (None, "")
    assert call.agent is not None
    agent_invite = first(call.agent, method="INVITE", direction="received")
    assert agent_invite.header("User-to-User") is None
    assert agent_invite.header("X-Interaction-Id") == call.interaction_id
    row = await final_record(stack, call.interaction_id, "escalated")
    assert row["error_reason"] == reason


async def test_injection_attempts_never_reach_the_dialplan(stack: DevStack) -> None:
    hostile = "escalate_to=agents-queue,1)${SHELL(id)};note=$[1+1]|a,b\"'\\${CALLERID(num)}"
    call = await place_call(
        stack,
        "escalate/bot",
        bot_keys={"refer_user": "escalation", "refer_headers": uui_in_refer_to(hostile)},
    )
    call.assert_parties_ok()
    # the target is not in the routing map: default queue, never the bot's string
    assert call.queued is not None
    assert (call.queued.dialplan.app_data or "").startswith("agents-queue,")
    assert call.variables["ERROR"] == "escalate_to_unknown"
    for name, value in call.variables.items():
        for bad in ("$", "{", "[", ",", "|", '"', "'", "\\", "(", ")"):
            assert bad not in (value or ""), f"BOTBRIDGE_{name}={value!r} contains {bad!r}"
    assert call.variables["CTX_NOTE"]  # kept, in the safe alphabet
    assert call.agent is not None
    agent_invite = first(call.agent, method="INVITE", direction="received")
    for header in ("User-to-User", "X-Escalate-To"):
        assert "$" not in (agent_invite.header(header) or "")


# -- the other endings ---------------------------------------------------------------------


async def test_bot_hangs_up_resolved_with_audio_both_ways(stack: DevStack) -> None:
    sipp = stack.sipp()
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", "3000"])
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="85551000",
        keys={"caller_number": "15550002222"},
    )
    async with stack.rest() as ari:

        async def bridged_pair() -> list[str] | None:
            for bridge in await ari.bridges():
                if len(bridge.channels) == 2:
                    return list(bridge.channels)
            return None

        channel_ids = await until(bridged_pair, 15, "caller and bot bridged")

        async def media_both_ways() -> list[Record] | None:
            stats = [await ari.get(f"/channels/{cid}/rtp_statistics") for cid in channel_ids]
            ok = all(
                s["rxcount"] > MIN_RTP_PACKETS and s["txcount"] > MIN_RTP_PACKETS for s in stats
            )
            return stats if ok else None

        await until(media_both_ways, 10, "RTP received and sent on both legs")
    for run in (caller, bot):
        run.wait(CALL_TIMEOUT)
        assert run.returncode == 0, run.report()
    invite = first(bot, method="INVITE", direction="received")
    # the priority-line dialplan example set business_hours before Stasis()
    assert decode_uui_header(invite.header("User-to-User") or "") == "business_hours=priority"
    assert first(caller, method="BYE", direction="received")
    row = await final_record(stack, invite.header("X-Interaction-Id") or "", "resolved")
    assert row["state"] == "resolved" and row["ended_at"]
    assert row["bot_answered_at"] < row["bot_ended_at"] <= row["ended_at"]
    assert 2.5 < row["bot_seconds"] < 10 and row["billable_minutes"] == 1.0
    assert row["agent_answered_at"] is None and row["transfer_at"] is None


async def test_caller_hangs_up_abandoned(stack: DevStack) -> None:
    call = await place_call(
        stack,
        "caller_abandons/bot",
        expect_queue=False,
        bot_extra=(),
        caller_scenario="common/caller_hangs_up",
        caller_extra=("-d", "2000"),
    )
    call.assert_parties_ok()
    assert call.bot is not None
    assert first(call.bot, method="BYE", direction="received")
    row = await final_record(stack, call.interaction_id, "abandoned")
    assert row["bot_answered_at"] and row["ended_at"]


@pytest.mark.parametrize(
    ("code", "reason"), [("486", "bot_busy"), ("503", "bot_congestion"), ("603", "bot_congestion")]
)
async def test_bot_rejects_caller_goes_to_fallback_queue(
    stack: DevStack, code: str, reason: str
) -> None:
    # one scenario per code: SIPp checks a response code when it loads the scenario, so the
    # code cannot be a -key
    call = await place_call(stack, f"bot_rejects/bot_{code}", bot_extra=())
    call.assert_parties_ok()
    assert call.bot is not None
    assert first(call.bot, status=int(code), direction="sent")
    assert call.variables["OUTCOME"] == "bot_failed"
    assert call.variables["QUEUE"] == "agents-queue"
    assert (call.variables["ERROR"] or "").startswith("bot_")
    row = await final_record(stack, call.interaction_id, "bot_failed")
    assert row["error_reason"] == call.variables["ERROR"]
    assert row["queue"] == "agents-queue"


async def test_bot_does_not_answer_caller_goes_to_fallback_queue(stack: DevStack) -> None:
    call = await place_call(stack, "bot_no_answer/bot", bot_extra=())
    call.assert_parties_ok()
    assert call.bot is not None
    assert first(call.bot, method="CANCEL", direction="received")
    assert call.variables["OUTCOME"] == "bot_failed"
    assert call.variables["ERROR"] == "bot_noanswer"
    assert call.agent is not None
    assert first(call.agent, method="INVITE", direction="received")


async def test_bot_unreachable_caller_goes_to_fallback_queue(stack: DevStack) -> None:
    call = await place_call(stack, None)
    call.assert_parties_ok()
    assert call.variables["OUTCOME"] == "bot_failed"
    assert (call.variables["ERROR"] or "").startswith("bot_")
    assert call.agent is not None
    agent_invite = first(call.agent, method="INVITE", direction="received")
    iid = agent_invite.header("X-Interaction-Id") or ""
    row = await final_record(stack, iid, "bot_failed")
    assert row["bot_answered_at"] is None
    assert row["bot_seconds"] == 0 and row["billable_minutes"] == 0
    assert row["agent_answered_at"] and row["agent_answered_at"] < row["ended_at"]


async def test_attended_transfer_is_never_performed(stack: DevStack) -> None:
    """A REFER with Replaces: Asterisk accepts it (202, NOTIFY 200) before the app sees it,
    so it cannot be declined on the wire; the app never joins the caller to the named dialog
    and handles the request as a blind escalation, recording that the Replaces was ignored."""
    replaces = "Replaces=unknown-dialog%40127.0.0.1%3Bto-tag%3D1234%3Bfrom-tag%3D5678"
    context = b"escalate_to=billing".hex()
    call = await place_call(
        stack,
        "escalate/bot",
        bot_keys={
            "refer_user": "agent",
            "refer_headers": f"?{replaces}&User-to-User={context}%3Bencoding%3Dhex",
        },
    )
    call.assert_parties_ok()
    assert call.bot is not None
    refer = first(call.bot, method="REFER", direction="sent")
    assert "Replaces=" in (refer.header("Refer-To") or "")
    assert call.variables["QUEUE"] == "billing-queue"
    assert call.variables["ERROR"] == "attended_transfer_ignored"
    assert call.agent is not None
    assert (
        first(call.agent, method="INVITE", direction="received").header("X-Escalate-To")
        == "billing"
    )
    row = await final_record(stack, call.interaction_id, "escalated")
    assert row["error_reason"] == "attended_transfer_ignored"


async def test_resolved_caller_continues_in_the_post_bot_context(
    runtime: Runtime, tmp_path: Path
) -> None:
    config_file = tmp_path / "post-bot.toml"
    config_file.write_text('[profiles.default]\npost_bot_context = "botbridge-post-bot"\n')
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-postbot-{uuid.uuid4().hex[:8]}",
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config_file)},
    )
    stack.start()
    try:
        sipp = stack.sipp()
        bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", "1000"])
        caller = sipp.start(
            "common/caller_waits",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550003333"},
        )
        async with stack.rest() as ari:

            async def in_post_bot() -> Channel | None:
                for channel in await ari.channels():
                    if channel.dialplan.context == "botbridge-post-bot":
                        return channel
                return None

            channel = await until(in_post_bot, 15, "the caller in botbridge-post-bot")
            outcome = await ari.get_var(channel.id, "BOTBRIDGE_OUTCOME")
        for run in (caller, bot):
            run.wait(CALL_TIMEOUT)
            assert run.returncode == 0, run.report()
        assert outcome == "resolved"
        assert first(caller, method="BYE", direction="received")
        # followed in the post-bot context: the record ends when the caller does
        iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
        row = await final_record(stack, iid or "", "resolved")
        assert row["bot_ended_at"] + 1.5 < row["ended_at"]  # the context's Wait(2)
    finally:
        stack.stop()
