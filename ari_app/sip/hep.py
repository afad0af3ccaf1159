"""HEPv3 packets (the capture protocol of Asterisk's res_hep) and the SIP message they carry.

Pure and total: :func:`parse_hep3` returns the chunks of one packet or raises
:class:`HepError`; :func:`parse_sip_message` splits a SIP message's start line and headers,
in time linear in the message's size.
Used only by the optional BYE-context feature (docs/decisions.md (o)); nothing else depends
on it. Format: a 6-byte header (``HEP3``, total length) then chunks of vendor id (2 bytes),
type (2), length (2, including these 6) and data; res_hep.c writes them in network order.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CHUNK_AUTH_KEY",
    "CHUNK_DST_PORT",
    "CHUNK_PAYLOAD",
    "CHUNK_SRC_PORT",
    "CHUNK_UUID",
    "HepError",
    "HepPacket",
    "SipMessage",
    "parse_hep3",
    "parse_sip_message",
]

MAGIC = b"HEP3"
HEADER = struct.Struct("!4sH")
CHUNK = struct.Struct("!HHH")
GENERIC_VENDOR = 0x0000
CHUNK_SRC_PORT = 0x0007
CHUNK_DST_PORT = 0x0008
CHUNK_AUTH_KEY = 0x000E
CHUNK_PAYLOAD = 0x000F
CHUNK_UUID = 0x0011  # the correlation id: the SIP Call-ID with uuid_type = call-id
# RFC 3261 compact header names that matter here
_COMPACT = {"i": "Call-ID", "f": "From", "t": "To", "v": "Via", "l": "Content-Length"}


class HepError(ValueError):
    """Not a well-formed HEPv3 packet (or not a SIP message inside)."""


@dataclass(frozen=True)
class HepPacket:
    chunks: Mapping[int, bytes]  # generic-vendor chunk type -> data (the last one wins)

    @property
    def auth_key(self) -> bytes:
        return self.chunks.get(CHUNK_AUTH_KEY, b"")

    @property
    def payload(self) -> bytes:
        return self.chunks.get(CHUNK_PAYLOAD, b"")

    @property
    def correlation_id(self) -> bytes:
        """The SIP Call-ID of the copied message (hep.conf ``uuid_type = call-id``), read
        without parsing the message."""
        return self.chunks.get(CHUNK_UUID, b"")

    def port(self, chunk: int) -> int | None:
        data = self.chunks.get(chunk)
        return struct.unpack("!H", data)[0] if data is not None and len(data) == 2 else None


@dataclass(frozen=True)
class SipMessage:
    start_line: str
    headers: tuple[tuple[str, str], ...]

    @property
    def method(self) -> str | None:
        first = self.start_line.split(" ", 1)[0]
        return None if first.startswith("SIP/") else first

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def parse_hep3(data: bytes) -> HepPacket:
    if len(data) < HEADER.size:
        raise HepError("shorter than a HEP header")
    magic, total = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise HepError("not HEPv3")
    if total != len(data):
        raise HepError(f"length {total} in the header, {len(data)} received")
    chunks: dict[int, bytes] = {}
    offset = HEADER.size
    while offset < total:
        if total - offset < CHUNK.size:
            raise HepError("truncated chunk header")
        vendor, kind, length = CHUNK.unpack_from(data, offset)
        if length < CHUNK.size or offset + length > total:
            raise HepError(f"chunk 0x{kind:04x} of length {length} does not fit")
        if vendor == GENERIC_VENDOR:
            chunks[kind] = data[offset + CHUNK.size : offset + length]
        offset += length
    return HepPacket(chunks)


def parse_sip_message(payload: bytes) -> SipMessage:
    """Start line and headers (folded lines joined, compact names expanded); no body."""
    text = payload.decode("utf-8", errors="replace")
    head = text.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")
    if not lines or " " not in lines[0]:
        raise HepError("no SIP start line")
    # each header's parts, joined once at the end: linear in the message, however many
    # continuation lines a header is folded over (repeated += copied the value every time)
    headers: list[tuple[str, list[str]]] = []
    for line in lines[1:]:
        if line[:1] in {" ", "\t"} and headers:
            headers[-1][1].append(line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        headers.append((_COMPACT.get(name, name), [value.strip()]))
    return SipMessage(lines[0].strip(), tuple((n, " ".join(parts)) for n, parts in headers))
