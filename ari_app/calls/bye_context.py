"""The bot's BYE headers, from Asterisk's HEP copies of its SIP messages (optional feature).

Stock Asterisk 22 keeps the headers of a BYE from every function and API (docs/decisions.md
(n)); its HEP capture module copies each SIP message it receives to a UDP address. With
``[bye_context] enabled``, Asterisk sends those copies to this receiver on a loopback
address. A copy counts only when it comes from one of ``sources`` and carries the capture
password; of those, only BYE requests that Asterisk received (destination port: its SIP
port) on a live bot dialog are kept.

Asterisk copies a message before its own checks (ACLs, dialog matching), so whoever reaches
its SIP port chooses what arrives here. Hence: the sessions tell this receiver which bot
dialogs are live (:meth:`ByeContexts.follow` once the bot leg's Call-ID is known,
:meth:`ByeContexts.forget` when the call ends); a copy whose Call-ID (the HEP correlation id,
read without parsing the SIP message) is longer than ``max_call_id_bytes`` or not a live bot
dialog is dropped before anything else is parsed. A live dialog holds at most one copy (the
latest replaces it) with its User-to-User headers only, each no longer than the longest
value the context codec accepts for ``[bridge] max_context_bytes`` (a longer one drops the
copy), and the headers any profile copies from its bot (``bot_headers``), each cut to
``max_context_bytes`` + 1 characters; at most ``max_entries`` dialogs are followed: memory
stays bounded whatever arrives. Every datagram is counted by result (:data:`RESULTS`,
``/metrics``).

When a connected bot hangs up, its session asks for the BYE of the bot's Call-ID and waits
up to ``wait_seconds`` for it (the copy usually arrives before ARI's events); a copy older
than ``ttl_seconds`` is not used.
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
    HepPacket,
    parse_hep3,
    parse_sip_message,
)
from ari_app.sip.uui import DEFAULT_MAX_CONTEXT_BYTES, max_uui_value_chars

__all__ = ["BYE_CONTEXT_HEADERS", "RESULTS", "ByeContexts"]

log = logging.getLogger(__name__)

# BYE headers that may carry the bot's context, in order of preference
BYE_CONTEXT_HEADERS = ("User-to-User", "x-User-to-User")

# what became of each datagram received (the counts exported in /metrics)
KEPT = "kept"  # a BYE on a live bot dialog: its context headers kept
REJECTED = "rejected"  # not a HEP copy from Asterisk: other source, malformed, no password
SENT = "sent"  # a copy of a message Asterisk sent, not one it received
OVERSIZE = "oversize"  # Call-ID longer than max_call_id_bytes, or a context header too long
OTHER_DIALOG = "other_dialog"  # not a live bot dialog (the callers', or forged): unparsed
NOT_BYE = "not_bye"  # another message of a live bot dialog
RESULTS = (KEPT, REJECTED, SENT, OVERSIZE, OTHER_DIALOG, NOT_BYE)

# one kept BYE copy: when it arrived (monotonic) and its context headers
_Copy = tuple[float, dict[str, str]]


class ByeContexts(asyncio.DatagramProtocol):
    def __init__(
        self,
        settings: ByeContextSettings,
        password: str,
        sip_ports: tuple[int, ...],
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
        bot_headers: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self._password = password.encode()
        self._sources = [ipaddress.ip_network(s, strict=False) for s in settings.sources]
        self._sip_ports = frozenset(sip_ports)
        # the longest context header worth keeping: any longer is refused by the codec anyway
        self._max_header_chars = max_uui_value_chars(max_context_bytes, discriminator=True)
        # the headers the profiles copy from the bot (bot_headers), each kept cut to one
        # character over max_context_bytes: a longer value is then refused as too large
        # when it would be copied (calls/carrier.py), the BYE's context used all the same
        context_names = {name.lower() for name in BYE_CONTEXT_HEADERS}
        self._bot_headers = tuple(h for h in bot_headers if h.lower() not in context_names)
        self._bot_header_chars = max_context_bytes + 1
        # live bot dialogs by Call-ID, oldest first -> their latest BYE copy, if one came
        self._dialogs: OrderedDict[str, _Copy | None] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.results = dict.fromkeys(RESULTS, 0)

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

    # -- the live bot dialogs -------------------------------------------------------------

    def follow(self, call_id: str) -> None:
        """The bot dialog ``call_id`` is live: a BYE copy on it will be kept. The oldest
        dialog followed is let go beyond ``max_entries``."""
        if len(call_id.encode()) > self.settings.max_call_id_bytes:
            log.warning("BYE context: Call-ID %r is longer than max_call_id_bytes", call_id)
            return
        self._dialogs.setdefault(call_id, None)
        self._dialogs.move_to_end(call_id)
        while len(self._dialogs) > self.settings.max_entries:
            self._dialogs.popitem(last=False)

    def forget(self, call_id: str) -> None:
        """The call of bot dialog ``call_id`` ended: its copy, if any, goes."""
        self._dialogs.pop(call_id, None)

    def followed(self) -> int:
        """Bot dialogs followed now."""
        return len(self._dialogs)

    def held(self) -> int:
        """BYE copies held now (at most one per dialog followed)."""
        return sum(copy is not None for copy in self._dialogs.values())

    def counts(self) -> dict[str, int]:
        """Datagrams received so far by result (:data:`RESULTS`)."""
        return dict(self.results)

    # -- receiving -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.results[self._receive(data, str(addr[0]))] += 1

    def _receive(self, data: bytes, host: str) -> str:
        if not self._from_source(host):
            return REJECTED
        try:
            packet = parse_hep3(data)
        except HepError:
            return REJECTED
        if not hmac.compare_digest(packet.auth_key, self._password):
            return REJECTED
        if packet.port(CHUNK_DST_PORT) not in self._sip_ports:
            return SENT
        if len(packet.correlation_id) > self.settings.max_call_id_bytes:
            return OVERSIZE
        call_id = packet.correlation_id.decode("utf-8", errors="replace")
        if call_id not in self._dialogs:
            return OTHER_DIALOG
        return self._keep_bye(call_id, packet)

    def _keep_bye(self, call_id: str, packet: HepPacket) -> str:
        """A copy on a live bot dialog: kept when it is a BYE (replacing an earlier one)."""
        try:
            message = parse_sip_message(packet.payload)
        except HepError:
            return NOT_BYE
        if message.method != "BYE":
            return NOT_BYE
        headers = {
            name: value
            for name in BYE_CONTEXT_HEADERS
            if (value := message.header(name)) is not None
        }
        if any(len(value) > self._max_header_chars for value in headers.values()):
            return OVERSIZE
        for name in self._bot_headers:
            value = message.header(name)
            if value is not None:
                headers[name] = value[: self._bot_header_chars]
        self._dialogs[call_id] = (time.monotonic(), headers)
        waiter = self._waiters.get(call_id)
        if waiter is not None:
            waiter.set()
        return KEPT

    def _from_source(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._sources)

    # -- the call path ---------------------------------------------------------------------

    async def headers_of(self, call_id: str) -> Mapping[str, str] | None:
        """The context headers of the BYE of dialog ``call_id``, waiting up to
        ``wait_seconds`` for its copy; None when no BYE copy came (the bot did not send the
        BYE, or the copy was lost: HEP is UDP) or it is older than ``ttl_seconds``."""
        headers = self._take(call_id)
        if headers is None and self.settings.wait_seconds > 0:
            waiter = self._waiters.setdefault(call_id, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), self.settings.wait_seconds)
            except TimeoutError:
                pass
            finally:
                self._waiters.pop(call_id, None)
            headers = self._take(call_id)
        return headers

    def _take(self, call_id: str) -> dict[str, str] | None:
        copy = self._dialogs.get(call_id)
        if copy is None:
            return None
        self._dialogs[call_id] = None  # taken once; the dialog stays followed until forget
        received, headers = copy
        return headers if received >= time.monotonic() - self.settings.ttl_seconds else None
