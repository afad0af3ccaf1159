"""DTMF and codecs on a real Asterisk 22, proven on the wire (docs/media.md).

SIPp plays RTP from pcap files written here (RFC 4733 telephone-events, G.722 frames); the
receiving party's SDP names a UDP socket of the test (tests/media.py), so the test reads the
RTP that Asterisk sent to that party: its payload type, its events, its bytes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SipMessage, SippRun
from devtools.stack import free_port
from tests.harness import first, sipp_finished, until
from tests.media import RtpListener, dtmf_packets, write_rtp_pcap

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

TELEPHONE_EVENT = 101
G722 = 9
PCMU = 0
CALL_TIMEOUT = 40
G722_FRAMES = 100  # two seconds of 20 ms frames
G722_FRAME_BYTES = 160  # 64 kbit/s for 20 ms


@pytest.fixture
async def listeners() -> AsyncIterator[list[RtpListener]]:
    opened: list[RtpListener] = []
    yield opened
    for listener in opened:
        listener.close()


async def listener(opened: list[RtpListener]) -> RtpListener:
    rtp = await RtpListener.open(0)
    opened.append(rtp)
    return rtp


def pcap(stack: DevStack, name: str, packets: list[tuple[int, bool, int, bytes]]) -> str:
    """Write a pcap where SIPp can read it; the path as SIPp sees it."""
    path = stack.root / "sipp" / f"{name}-{uuid.uuid4().hex[:8]}.pcap"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rtp_pcap(path, packets)
    return stack.runtime.runtime_path(path)


async def finish(*runs: SippRun) -> None:
    for run in runs:
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()


def sdp_payloads(message: SipMessage) -> list[int]:
    """The payload types of the SDP's audio line, in the order offered or answered."""
    match = re.search(r"^m=audio \d+ RTP/\w+ ([\d ]+)", message.body, re.MULTILINE)
    assert match, message.body
    return [int(p) for p in match.group(1).split()]


def start_caller(stack: DevStack, scenario: str, keys: dict[str, str], delay_ms: int) -> SippRun:
    return stack.sipp().start(
        scenario,
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": "15550004444", **keys},
        extra=["-d", str(delay_ms)],
    )


def start_bot(stack: DevStack, scenario: str, keys: dict[str, str], delay_ms: int) -> SippRun:
    return stack.sipp().start(
        scenario, local_port=stack.bot_port, keys=keys, extra=["-d", str(delay_ms)]
    )


# -- DTMF ----------------------------------------------------------------------------------


async def test_caller_dtmf_reaches_the_bot_as_rfc4733(
    stack: DevStack, listeners: list[RtpListener]
) -> None:
    at_bot, at_caller = await listener(listeners), await listener(listeners)
    digits = "159#"
    bot = start_bot(
        stack,
        "media/bot_listens",
        {"sdp_port": str(at_bot.port), "payloads": f"{PCMU} {TELEPHONE_EVENT}"},
        6000,
    )
    caller = start_caller(
        stack,
        "media/caller_plays",
        {
            "sdp_port": str(at_caller.port),
            "payloads": f"{PCMU} {TELEPHONE_EVENT}",
            "pcap": pcap(stack, "caller-dtmf", dtmf_packets(digits, TELEPHONE_EVENT)),
        },
        1500,
    )
    received = await until(
        lambda: at_bot.digits(TELEPHONE_EVENT) == digits or None,
        15,
        f"RFC 4733 events {digits} at the bot's media port",
    )
    assert received
    await finish(caller, bot)
    invite = first(bot, method="INVITE", direction="received")
    assert "a=rtpmap:101 telephone-event/8000" in invite.body
    # every event packet is a well-formed RFC 4733 payload, and some carry the end bit
    events = at_bot.of_type(TELEPHONE_EVENT)
    assert all(len(p.payload) == 4 for p in events)
    assert any(p.payload[1] & 0x80 for p in events)


async def test_bot_dtmf_reaches_the_caller_as_rfc4733(
    stack: DevStack, listeners: list[RtpListener]
) -> None:
    at_caller, at_bot = await listener(listeners), await listener(listeners)
    digits = "*07"
    bot = start_bot(
        stack,
        "media/bot_plays",
        {
            "sdp_port": str(at_bot.port),
            "payloads": f"{PCMU} {TELEPHONE_EVENT}",
            "pcap": pcap(stack, "bot-dtmf", dtmf_packets(digits, TELEPHONE_EVENT)),
        },
        1500,
    )
    caller = start_caller(
        stack,
        "media/caller_listens",
        {"sdp_port": str(at_caller.port), "payloads": f"{PCMU} {TELEPHONE_EVENT}"},
        0,
    )
    received = await until(
        lambda: at_caller.digits(TELEPHONE_EVENT) == digits or None,
        15,
        f"RFC 4733 events {digits} at the caller's media port",
    )
    assert received
    await finish(caller, bot)


async def test_bot_sip_info_dtmf_reaches_the_caller_as_rfc4733(
    stack: DevStack, listeners: list[RtpListener]
) -> None:
    at_caller, at_bot = await listener(listeners), await listener(listeners)
    bot = start_bot(
        stack,
        "media/bot_info",
        {"sdp_port": str(at_bot.port), "payloads": f"{PCMU} {TELEPHONE_EVENT}", "digit": "5"},
        1500,
    )
    caller = start_caller(
        stack,
        "media/caller_listens",
        {"sdp_port": str(at_caller.port), "payloads": f"{PCMU} {TELEPHONE_EVENT}"},
        0,
    )
    received = await until(
        lambda: at_caller.digits(TELEPHONE_EVENT) == "5" or None,
        15,
        "the INFO digit as an RFC 4733 event at the caller's media port",
    )
    assert received
    await finish(caller, bot)
    assert first(bot, status=200, direction="received", cseq="INFO")


async def test_info_mode_bot_gets_the_callers_digits_as_sip_info(
    runtime: Runtime, tmp_path: Path, listeners: list[RtpListener]
) -> None:
    config_file = tmp_path / "info.toml"
    config_file.write_text('[profiles.default]\ndtmf_mode = "info"\n')
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-dtmf-info-{uuid.uuid4().hex[:8]}",
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config_file)},
    )
    stack.start()
    try:
        at_bot, at_caller = await listener(listeners), await listener(listeners)
        bot = start_bot(
            stack,
            "media/bot_takes_info",
            {"sdp_port": str(at_bot.port), "payloads": f"{PCMU} {TELEPHONE_EVENT}"},
            1000,
        )
        caller = start_caller(
            stack,
            "media/caller_plays",
            {
                "sdp_port": str(at_caller.port),
                "payloads": f"{PCMU} {TELEPHONE_EVENT}",
                "pcap": pcap(stack, "caller-dtmf-info", dtmf_packets("7", TELEPHONE_EVENT)),
            },
            1000,
        )
        await finish(caller, bot)
    finally:
        stack.stop()
    info = first(bot, method="INFO", direction="received")
    assert info.header("Content-Type") == "application/dtmf-relay"
    assert "Signal=7" in info.body.replace(" ", "")
    assert not at_bot.of_type(TELEPHONE_EVENT)  # as SIP INFO only, not in the RTP stream


# -- codecs --------------------------------------------------------------------------------


async def test_g722_end_to_end_without_transcoding(
    stack: DevStack, listeners: list[RtpListener]
) -> None:
    at_bot, at_caller = await listener(listeners), await listener(listeners)
    frames = [
        bytes([(n * 7 + i) % 251 for i in range(G722_FRAME_BYTES)]) for n in range(G722_FRAMES)
    ]
    packets = [(G722, n == 0, n * 160, frame) for n, frame in enumerate(frames)]
    bot = start_bot(
        stack,
        "media/bot_listens",
        {"sdp_port": str(at_bot.port), "payloads": f"{G722} {TELEPHONE_EVENT}"},
        5000,
    )
    caller = start_caller(
        stack,
        "media/caller_plays",
        {
            "sdp_port": str(at_caller.port),
            "payloads": f"{G722} {PCMU} {TELEPHONE_EVENT}",
            "pcap": pcap(stack, "caller-g722", packets),
        },
        1000,
    )
    async with stack.rest() as ari:

        async def bridged() -> list[str] | None:
            for bridge in await ari.bridges():
                if len(bridge.channels) == 2:
                    return [bridge.technology, *bridge.channels]
            return None

        technology, *channel_ids = await until(bridged, 15, "caller and bot bridged")
        formats = {
            (cid, item): await ari.get_var(cid, f"CHANNEL({item})")
            for cid in channel_ids
            for item in ("audionativeformat", "audioreadformat", "audiowriteformat")
        }
    await until(
        lambda: len(at_bot.of_type(G722)) >= G722_FRAMES // 2 or None,
        15,
        "G.722 frames at the bot's media port",
    )
    await finish(caller, bot)

    # the SDPs on the wire: G.722 first in the offer to the bot and in the caller's answer
    assert sdp_payloads(first(bot, method="INVITE", direction="received"))[0] == G722
    assert sdp_payloads(first(caller, status=200, direction="received", cseq="INVITE"))[0] == G722
    # Asterisk: both legs read and write G.722, bridged without a mixing (transcoding) step
    # (audionativeformat lists the channel's native formats in parentheses: "(g722)")
    assert {(value or "").strip("()") for value in formats.values()} == {"g722"}, formats
    assert technology in {"native_rtp", "simple_bridge"}, technology
    # the bytes the caller sent reached the bot unchanged: no decode and re-encode
    sent = set(frames)
    arrived = [p.payload for p in at_bot.of_type(G722)]
    assert arrived and all(payload in sent for payload in arrived)
    assert not at_bot.of_type(PCMU)


async def test_g711_when_the_caller_offers_no_g722(
    stack: DevStack, listeners: list[RtpListener]
) -> None:
    at_bot, at_caller = await listener(listeners), await listener(listeners)
    bot = start_bot(
        stack,
        "media/bot_listens",
        {"sdp_port": str(at_bot.port), "payloads": f"{PCMU} {TELEPHONE_EVENT}"},
        3000,
    )
    caller = start_caller(
        stack,
        "media/caller_plays",
        {
            "sdp_port": str(at_caller.port),
            "payloads": f"{PCMU} {TELEPHONE_EVENT}",
            "pcap": pcap(stack, "caller-dtmf-g711", dtmf_packets("1", TELEPHONE_EVENT)),
        },
        500,
    )
    await finish(caller, bot)
    answer = first(caller, status=200, direction="received", cseq="INVITE")
    assert sdp_payloads(answer)[0] == PCMU and G722 not in sdp_payloads(answer)
    # the bot is offered the caller's codec first, so a bot taking it needs no transcoding
    assert sdp_payloads(first(bot, method="INVITE", direction="received"))[0] == PCMU
    assert at_bot.digits(TELEPHONE_EVENT) == "1"
