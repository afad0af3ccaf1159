"""The [bye_context] receiver under hostile input: whoever reaches Asterisk's SIP port chooses
what Asterisk copies to it over HEP. Only BYEs on live bot dialogs are kept, one per dialog;
long Call-IDs and context headers are dropped; folded header lines are joined in linear time.

The packets are given to the receiver's ``datagram_received`` directly (no UDP loss);
tests/unit/test_hep.py sends real datagrams, tests/integration/test_bye_context.py floods the
running app.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ari_app.calls import bye_context
from ari_app.calls.bye_context import ByeContexts
from ari_app.config import ByeContextSettings, ConfigError, load_config
from ari_app.sip.hep import SipMessage, parse_sip_message
from ari_app.sip.uui import DEFAULT_MAX_CONTEXT_BYTES, max_uui_value_chars
from tests.unit.test_hep import BYE, BYE_UUI, PASSWORD, SIP_PORT, hep

CALL_ID = "call-1@127.0.0.1"
ASTERISK = ("127.0.0.1", 5080)
# the longest context header kept: what the codec could accept for the default context limit
MAX_HEADER = max_uui_value_chars(DEFAULT_MAX_CONTEXT_BYTES, discriminator=True)
FLOOD = 2000
# the size of one forged packet
FLOOD_PACKET_BYTES = 30_000
FOLDED_LINES = 100_000
FOLDED_LINE_CHARS = 16


def settings(**overrides: object) -> ByeContextSettings:
    values: dict[str, object] = {"enabled": True, "wait_seconds": 0, "max_entries": 10}
    return ByeContextSettings(**{**values, **overrides})  # type: ignore[arg-type]


def bye(call_id: str = CALL_ID, uui: str = BYE_UUI, **packet: Any) -> bytes:
    message = BYE.replace("i: call-1@127.0.0.1", f"i: {call_id}").replace(
        "User-to-User: 657363616c6174655f746f3d62696c6c696e67;\r\n encoding=hex",
        f"User-to-User: {uui}",
    )
    return hep(message, call_id=call_id, **packet)


def forged(n: int, **packet: Any) -> bytes:
    """A large forged BYE on no live dialog (as Asterisk copies what anyone sends it): big
    headers, thousands of folded lines; ``packet``: hep()'s password and dst_port."""
    folded = "\r\n x" * ((FLOOD_PACKET_BYTES - 2 * MAX_HEADER) // 4)
    uui = "ab" * MAX_HEADER
    return bye(f"forged-{n}@attacker", uui + folded, **packet)


@pytest.fixture
def receiver() -> ByeContexts:
    return ByeContexts(settings(), PASSWORD, (SIP_PORT,))


async def test_a_bye_on_no_live_bot_dialog_is_dropped_unparsed(
    receiver: ByeContexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real_parse: Callable[[bytes], SipMessage] = parse_sip_message

    def parse(payload: bytes) -> SipMessage:
        parsed.append(payload)
        return real_parse(payload)

    monkeypatch.setattr(bye_context, "parse_sip_message", parse)
    receiver.datagram_received(bye(), ASTERISK)
    assert await receiver.headers_of(CALL_ID) is None
    assert parsed == []
    assert receiver.results["other_dialog"] == 1 and receiver.held() == 0

    receiver.follow(CALL_ID)  # now the bot dialog is live: the same copy counts
    receiver.datagram_received(bye(), ASTERISK)
    assert await receiver.headers_of(CALL_ID) == {"User-to-User": BYE_UUI}
    assert len(parsed) == 1 and receiver.results["kept"] == 1


async def test_a_forgotten_dialog_keeps_nothing(receiver: ByeContexts) -> None:
    receiver.follow(CALL_ID)
    receiver.datagram_received(bye(), ASTERISK)
    assert receiver.held() == 1
    receiver.forget(CALL_ID)  # the call ended
    assert receiver.held() == 0 and receiver.followed() == 0
    receiver.datagram_received(bye(), ASTERISK)
    assert await receiver.headers_of(CALL_ID) is None
    assert receiver.results["other_dialog"] == 1


async def test_a_call_id_over_max_call_id_bytes_is_dropped(receiver: ByeContexts) -> None:
    long_id = "c" * (receiver.settings.max_call_id_bytes + 1)
    receiver.follow(long_id)  # refused too: no Asterisk dialog has such a Call-ID
    receiver.datagram_received(bye(long_id), ASTERISK)
    assert await receiver.headers_of(long_id) is None
    assert receiver.results["oversize"] == 1 and receiver.followed() == 0


@pytest.mark.parametrize(("length", "kept"), [(MAX_HEADER, True), (MAX_HEADER + 1, False)])
async def test_a_context_header_longer_than_the_context_limit_allows_is_dropped(
    receiver: ByeContexts, length: int, kept: bool
) -> None:
    uui = "a" * length
    receiver.follow(CALL_ID)
    receiver.datagram_received(bye(uui=uui), ASTERISK)
    assert await receiver.headers_of(CALL_ID) == ({"User-to-User": uui} if kept else None)
    assert receiver.results["oversize"] == (0 if kept else 1)


async def test_a_live_dialog_holds_one_copy_the_latest(receiver: ByeContexts) -> None:
    receiver.follow(CALL_ID)
    for n in range(100):
        receiver.datagram_received(bye(uui=f"{n:04x};encoding=hex"), ASTERISK)
    assert receiver.held() == 1 and receiver.results["kept"] == 100
    assert await receiver.headers_of(CALL_ID) == {"User-to-User": "0063;encoding=hex"}
    assert receiver.held() == 0  # taken once
    assert receiver.followed() == 1  # still followed until the call ends


def test_at_most_max_entries_dialogs_are_followed(receiver: ByeContexts) -> None:
    for n in range(15):
        receiver.follow(f"call-{n}")
        receiver.datagram_received(bye(f"call-{n}"), ASTERISK)
    assert receiver.followed() == receiver.settings.max_entries == receiver.held()
    receiver.datagram_received(bye("call-0"), ASTERISK)  # the oldest were let go
    assert receiver.results["other_dialog"] == 1


async def test_a_flood_of_large_forged_byes_leaves_memory_as_it_was() -> None:
    # max_entries as shipped: the old receiver kept up to that many copies of any Call-ID
    receiver = ByeContexts(
        settings(max_entries=ByeContextSettings().max_entries), PASSWORD, (SIP_PORT,)
    )
    receiver.follow(CALL_ID)
    packets = [forged(n) for n in range(FLOOD)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for packet in packets:
            receiver.datagram_received(packet, ASTERISK)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the old receiver kept every copy (8 MB traced for these); now less than one packet
    assert grown < FLOOD_PACKET_BYTES
    assert receiver.held() == 0 and receiver.followed() == 1
    assert receiver.results["other_dialog"] == FLOOD
    receiver.datagram_received(bye(), ASTERISK)  # the live dialog's own BYE still counts
    assert await receiver.headers_of(CALL_ID) == {"User-to-User": BYE_UUI}


def _fastest(parse: Callable[[], SipMessage], runs: int = 2) -> tuple[float, SipMessage]:
    best, message = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        message = parse()
        best = min(best, time.perf_counter() - started)
    assert message is not None
    return best, message


def test_folded_lines_are_joined_in_linear_time() -> None:
    """100,000 continuation lines cost about what 100,000 header lines of the same size cost
    (one pass each). Joined by repeated += every line copied the value so far: measured 8 to
    10 times the plain split with 8-character lines, 120 times with 100."""
    start = "BYE sip:a@127.0.0.1 SIP/2.0\r\n"
    part = "x" * FOLDED_LINE_CHARS
    folded = (start + "User-to-User: x" + f"\r\n {part}" * FOLDED_LINES + "\r\n\r\n").encode()
    separate = (start + f"X-H: {part}\r\n" * (FOLDED_LINES + 1) + "\r\n").encode()
    folded_seconds, message = _fastest(lambda: parse_sip_message(folded))
    separate_seconds, lines = _fastest(lambda: parse_sip_message(separate))
    assert message.header("User-to-User") == " ".join(["x"] + [part] * FOLDED_LINES)
    assert len(message.headers) == 1 and len(lines.headers) == FOLDED_LINES + 1
    # a ratio of two runs on the same machine, not a time: a linear join is about 1
    assert folded_seconds < 3 * separate_seconds, (folded_seconds, separate_seconds)


@pytest.mark.parametrize(("value", "valid"), [(35, False), (36, True), (1024, True), (1025, False)])
def test_max_call_id_bytes_is_a_checked_setting(tmp_path: Path, value: int, valid: bool) -> None:
    def load() -> int:
        config = load_config(
            env={"BOTBRIDGE_STATE_DIR": str(tmp_path)},
            overrides={"bye_context": {"max_call_id_bytes": value}},
        )
        return config.bye_context.max_call_id_bytes

    if valid:
        assert load() == value
    else:
        with pytest.raises(ConfigError, match=r"bye_context\.max_call_id_bytes"):
            load()
