"""Media on the wire for tests: RTP pcap files for SIPp to play, and an RTP listener.

SIPp plays RTP from a pcap file (``<exec play_pcap_audio=...>``) but cannot decode what it
receives. So a party that must prove what reached it declares :class:`RtpListener`'s port as
its SDP media port: Asterisk sends that party's RTP to a plain UDP socket here, and the test
reads payload types, payloads and RFC 4733 telephone-events from the packets themselves.
"""

from __future__ import annotations

import asyncio
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DTMF_CODES",
    "RtpListener",
    "RtpPacket",
    "dtmf_packets",
    "tone_share",
    "ulaw_samples",
    "write_rtp_pcap",
]

# RFC 4733 event codes of the DTMF digits
DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14}
DIGITS_BY_CODE = {code: digit for digit, code in DTMF_CODES.items()}
PACKET_MS = 20
SAMPLES_PER_PACKET = 160  # 20 ms at the 8000 Hz RTP clock of G.711, G.722 and events
DIGIT_PACKETS = 8  # 160 ms of tone per digit
END_REPEATS = 3  # the end packet is sent three times (RFC 4733 2.5.1.4)
GAP_PACKETS = 5  # 100 ms between digits
EVENT_VOLUME = 10
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket | None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return None
        csrc = data[0] & 0x0F
        offset = 12 + 4 * csrc
        if data[0] & 0x10:  # header extension
            if len(data) < offset + 4:
                return None
            offset += 4 + 4 * struct.unpack("!H", data[offset + 2 : offset + 4])[0]
        end = len(data)
        if data[0] & 0x20:  # padding
            end -= data[-1]
        sequence, timestamp = struct.unpack("!HI", data[2:8])
        return cls(data[1] & 0x7F, bool(data[1] & 0x80), sequence, timestamp, data[offset:end])


def ulaw_samples(payload: bytes) -> list[int]:
    """G.711 mu-law (PCMU) bytes as 16-bit linear samples (ITU-T G.711's expansion)."""
    samples = []
    for byte in payload:
        code = ~byte & 0xFF
        magnitude = (((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)
        samples.append(-(magnitude - 0x84) if code & 0x80 else magnitude - 0x84)
    return samples


def tone_share(samples: list[int], frequency: float, rate: int = 8000) -> float:
    """The share of the block's energy at ``frequency`` (Goertzel): about 0.5 for a pure tone
    at that frequency, near 0 for silence or other tones (the block sets the resolution:
    800 samples at 8 kHz resolve 10 Hz)."""
    energy = sum(s * s for s in samples)
    if not samples or not energy:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    return power / (len(samples) * energy)


def dtmf_packets(digits: str, payload_type: int) -> list[tuple[int, bool, int, bytes]]:
    """RFC 4733 packets for ``digits``: (payload type, marker, timestamp, payload), 20 ms apart.

    The gaps between digits are empty slots (``payload_type`` -1): time passes, nothing is sent.
    """
    packets: list[tuple[int, bool, int, bytes]] = []
    timestamp = 0
    for digit in digits:
        code = DTMF_CODES[digit]
        for n in range(1, DIGIT_PACKETS + 1):
            packet = struct.pack("!BBH", code, EVENT_VOLUME, n * SAMPLES_PER_PACKET)
            packets.append((payload_type, n == 1, timestamp, packet))
        end = struct.pack("!BBH", code, 0x80 | EVENT_VOLUME, DIGIT_PACKETS * SAMPLES_PER_PACKET)
        packets.extend((payload_type, False, timestamp, end) for _ in range(END_REPEATS))
        packets.extend((-1, False, 0, b"") for _ in range(GAP_PACKETS))
        timestamp += (DIGIT_PACKETS + END_REPEATS + GAP_PACKETS) * SAMPLES_PER_PACKET
    return packets


def write_rtp_pcap(
    path: Path, packets: list[tuple[int, bool, int, bytes]], *, ssrc: int = 0x1234ABCD
) -> Path:
    """A pcap (Ethernet/IPv4/UDP) with one RTP packet per entry, 20 ms apart, for SIPp."""
    records = [_PCAP_HEADER]
    sequence = 1000
    for index, (payload_type, marker, timestamp, payload) in enumerate(packets):
        if payload_type < 0:
            continue
        rtp = struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc
        )
        sequence += 1
        frame = _ethernet_ipv4_udp(rtp + payload)
        micros = index * PACKET_MS * 1000
        records.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        records.append(frame)
    path.write_bytes(b"".join(records))
    return path


def _ethernet_ipv4_udp(payload: bytes, src_port: int = 40000, dst_port: int = 40002) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    checksum = _ip_checksum(header)
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    ethernet = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ethernet + header + udp


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass
class RtpListener(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that keeps every RTP packet it receives (it never sends)."""

    packets: list[RtpPacket] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, port: int) -> RtpListener:
        listener = cls()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: listener, local_addr=("127.0.0.1", port)
        )
        listener.transport = transport
        return listener

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        packet = RtpPacket.parse(data)
        if packet is not None:
            self.packets.append(packet)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def of_type(self, payload_type: int) -> list[RtpPacket]:
        return [p for p in self.packets if p.payload_type == payload_type]

    def digits(self, payload_type: int) -> str:
        """The DTMF digits in the RFC 4733 events received, one per event (RTP timestamp)."""
        seen: list[tuple[int, int]] = []
        for packet in self.of_type(payload_type):
            if len(packet.payload) < 4:
                continue
            key = (packet.timestamp, packet.payload[0])
            if key not in seen:
                seen.append(key)
        return "".join(DIGITS_BY_CODE.get(code, "?") for _, code in seen)
