"""HEPv3 parsing and the BYE-context receiver's checks (password, source, direction).

The receiver tests send real UDP datagrams over loopback, from 127.0.0.1 and 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ari_app.calls.bye_context import ByeContexts
from ari_app.config import ByeContextSettings, ConfigError, load_config
from ari_app.sip.hep import HepError, parse_hep3, parse_sip_message
from devtools.stack import free_port

PASSWORD = "capture-secret"
SIP_PORT = 5060
# the User-to-User header of BYE below, its folded line joined
BYE_UUI = "657363616c6174655f746f3d62696c6c696e67; encoding=hex"
BYE = (
    "BYE sip:asterisk@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1\r\n"
    "i: call-1@127.0.0.1\r\n"
    "CSeq: 3 BYE\r\n"
    "User-to-User: 657363616c6174655f746f3d62696c6c696e67;\r\n"
    " encoding=hex\r\n"
    "Content-Length: 0\r\n\r\n"
)


def chunk(kind: int, data: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, kind, 6 + len(data)) + data


def hep(
    payload: str,
    *,
    password: str = PASSWORD,
    dst_port: int = SIP_PORT,
    call_id: str = "call-1@127.0.0.1",
) -> bytes:
    body = b"".join(
        [
            chunk(0x0001, b"\x02"),
            chunk(0x0007, struct.pack("!H", 5080)),
            chunk(0x0008, struct.pack("!H", dst_port)),
            chunk(0x000E, password.encode()),
            chunk(0x0011, call_id.encode()),
            chunk(0x0099, b"vendor data", vendor=4),
            chunk(0x000F, payload.encode()),
        ]
    )
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def test_parse_hep3_and_the_sip_message() -> None:
    packet = parse_hep3(hep(BYE))
    # every generic chunk by type, with its data; the other vendor's chunk (0x0099) left out
    assert dict(packet.chunks) == {
        0x0001: b"\x02",
        0x0007: struct.pack("!H", 5080),
        0x0008: struct.pack("!H", SIP_PORT),
        0x000E: PASSWORD.encode(),
        0x0011: b"call-1@127.0.0.1",  # the correlation id: the SIP Call-ID
        0x000F: BYE.encode(),
    }
    assert packet.auth_key == PASSWORD.encode()
    assert packet.payload == BYE.encode()
    assert packet.port(0x0008) == SIP_PORT and packet.port(0x0007) == 5080
    assert packet.port(0x0001) is None  # one byte is not a port
    message = parse_sip_message(packet.payload)
    assert message.start_line == "BYE sip:asterisk@127.0.0.1:5060 SIP/2.0"
    assert message.method == "BYE"
    assert message.headers == (
        ("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1"),
        ("Call-ID", "call-1@127.0.0.1"),  # compact "i" expanded
        ("CSeq", "3 BYE"),
        ("User-to-User", BYE_UUI),  # folded line joined
        ("Content-Length", "0"),
    )
    assert message.header("call-id") == "call-1@127.0.0.1"  # names match in any case
    assert message.header("Contact") is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HEP2" + b"\x00\x06",
        b"HEP3\x00\x07",  # length does not match
        b"HEP3\x00\x0c" + struct.pack("!HHH", 0, 0x0F, 60),  # chunk longer than the packet
        b"HEP3\x00\x08\x00\x00",  # truncated chunk header
    ],
)
def test_malformed_packets_are_errors(data: bytes) -> None:
    with pytest.raises(HepError):
        parse_hep3(data)


@pytest.fixture
async def receiver() -> AsyncIterator[ByeContexts]:
    settings = ByeContextSettings(
        enabled=True, capture_port=free_port(udp_too=True), wait_seconds=0.3, max_entries=10
    )
    contexts = ByeContexts(settings, PASSWORD, (SIP_PORT,))
    contexts.follow("call-1@127.0.0.1")  # a live bot dialog
    await contexts.start()
    yield contexts
    contexts.close()


def send(contexts: ByeContexts, data: bytes, source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(data, (contexts.settings.capture_host, contexts.settings.capture_port))


async def test_a_bye_copy_is_found_by_its_call_id(receiver: ByeContexts) -> None:
    send(receiver, hep(BYE))
    headers = await receiver.headers_of("call-1@127.0.0.1")
    assert headers == {"User-to-User": BYE_UUI}
    assert await receiver.headers_of("call-1@127.0.0.1") is None  # taken once


async def test_the_session_may_ask_before_the_copy_arrives(receiver: ByeContexts) -> None:
    waiting = asyncio.create_task(receiver.headers_of("call-1@127.0.0.1"))
    await asyncio.sleep(0.05)
    send(receiver, hep(BYE))
    assert await waiting == {"User-to-User": BYE_UUI}


@pytest.mark.parametrize(
    ("data", "source", "rejected"),
    [
        (hep(BYE, password="wrong"), "127.0.0.1", True),
        (hep(BYE, password=""), "127.0.0.1", True),
        (hep(BYE), "127.0.0.2", True),  # not a configured source
        (b"HEP3 garbage", "127.0.0.1", True),
        (hep(BYE, dst_port=5080), "127.0.0.1", False),  # a BYE Asterisk sent, not received
        (hep(BYE.replace("BYE sip", "INFO sip", 1)), "127.0.0.1", False),
    ],
)
async def test_copies_that_do_not_count(
    receiver: ByeContexts, data: bytes, source: str, rejected: bool
) -> None:
    send(receiver, data, source)
    assert await receiver.headers_of("call-1@127.0.0.1") is None
    assert receiver.results["rejected"] == (1 if rejected else 0)
    assert receiver.results["kept"] == 0


def test_the_capture_address_must_be_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bye_context\.capture_host: must be a loopback"):
        load_config(
            env={"BOTBRIDGE_STATE_DIR": str(tmp_path)},
            overrides={"bye_context": {"capture_host": "10.0.0.1"}},
        )
