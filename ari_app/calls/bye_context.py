"""The bot's BYE headers, from Asterisk's HEP copies of its SIP messages (optional feature).

Stock Asterisk 22 keeps the headers of a BYE from every function and API (docs/decisions.md
(n)); its HEP capture module copies each SIP message it receives to a UDP address. With
``[bye_context] enabled``, Asterisk sends those copies to this receiver on a loopback
address. A copy counts only when it comes from one of ``sources`` and carries the capture
password; of those, only BYE requests that Asterisk received (destination port: its SIP
port) are kept, by Call-ID, with their User-to-User headers, for ``ttl_seconds``. When a
connected bot hangs up, its session asks for the BYE of the bot's Call-ID and waits up to
``wait_seconds`` for it (the copy usually arrives before ARI's events).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping

from ari_app.config import ByeContextSettings
from ari_app.sip.hep import (
    CHUNK_DST_PORT,
    HepError,
    parse_hep3,
    parse_sip_message,
)

__all__ = ["BYE_CONTEXT_HEADERS", "ByeContexts"]

log = logging.getLogger(__name__)

# BYE headers that may carry the bot's context, in order of preference
BYE_CONTEXT_HEADERS = ("User-to-User", "x-User-to-User")


class ByeContexts(asyncio.DatagramProtocol):
    def __init__(
        self, settings: ByeContextSettings, password: str, sip_ports: tuple[int, ...]
    ) -> None:
        self.settings = settings
        self._password = password.encode()
        self._sources = [ipaddress.ip_network(s, strict=False) for s in settings.sources]
        self._sip_ports = frozenset(sip_ports)
        self._byes: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.accepted = 0
        self.rejected = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self,
            local_addr=(self.settings.capture_host, self.settings.capture_port),
        )
        self.transport = transport
        log.info(
            "BYE context: HEP capture on %s:%d",
            self.settings.capture_host,
            self.settings.capture_port,
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- receiving -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if not self._from_source(str(addr[0])):
            self.rejected += 1
            return
        try:
            packet = parse_hep3(data)
        except HepError:
            self.rejected += 1
            return
        if not hmac.compare_digest(packet.auth_key, self._password):
            self.rejected += 1
            return
        if packet.port(CHUNK_DST_PORT) not in self._sip_ports:
            return  # a message Asterisk sent, not one it received
        try:
            message = parse_sip_message(packet.payload)
        except HepError:
            return
        call_id = message.header("Call-ID")
        if message.method != "BYE" or not call_id:
            return
        headers = {
            name: value
            for name in BYE_CONTEXT_HEADERS
            if (value := message.header(name)) is not None
        }
        self.accepted += 1
        self._keep(call_id, headers)

    def _from_source(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._sources)

    def _keep(self, call_id: str, headers: dict[str, str]) -> None:
        now = time.monotonic()
        self._byes[call_id] = (now, headers)
        self._byes.move_to_end(call_id)
        while self._byes and (
            len(self._byes) > self.settings.max_entries
            or next(iter(self._byes.values()))[0] < now - self.settings.ttl_seconds
        ):
            self._byes.popitem(last=False)
        waiter = self._waiters.get(call_id)
        if waiter is not None:
            waiter.set()

    # -- the call path ---------------------------------------------------------------------

    async def headers_of(self, call_id: str) -> Mapping[str, str] | None:
        """The context headers of the BYE of dialog ``call_id``, waiting up to
        ``wait_seconds`` for its copy; None when no BYE copy came (the bot did not send the
        BYE, or the copy was lost: HEP is UDP)."""
        entry = self._byes.pop(call_id, None)
        if entry is None and self.settings.wait_seconds > 0:
            waiter = self._waiters.setdefault(call_id, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), self.settings.wait_seconds)
            except TimeoutError:
                pass
            finally:
                self._waiters.pop(call_id, None)
            entry = self._byes.pop(call_id, None)
        return entry[1] if entry is not None else None
