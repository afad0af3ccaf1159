"""Supervised ARI event websocket.

Connecting to ``/ari/events?app=...`` is what registers the Stasis application, so every
reconnect re-registers it; ``on_connected`` then lets the app reconcile calls that changed
while the socket was down.

The reader never waits for Asterisk: it reads frames continuously and hands each event, in
arrival order, to a *synchronous* handler that only routes it (the app puts it into the
call's own queue, ari_app/calls/dispatch.py). Asterisk writes events to this socket
synchronously with a short timeout (ari.conf ``websocket_write_timeout``): a reader that
stopped to await REST replies would stall Asterisk and lose the socket. Event types outside
``types`` are counted and dropped before any schema validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssllib
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .backoff import next_delay
from .rest import basic_authorization
from .schemas import Event, EventSchemaError, parse_event

__all__ = [
    "SLOW_HANDLER_SECONDS",
    "STABLE_CONNECTION_SECONDS",
    "EventHandler",
    "EventStream",
    "OnConnected",
    "events_url",
]

logger = logging.getLogger(__name__)

# Routing one event is a few dictionary look-ups; slower than this means the routing code
# does real work it should hand to the call's own task.
SLOW_HANDLER_SECONDS = 0.05
# A connection that stayed up this long counts as healthy: the next outage starts the backoff
# from the beginning instead of where the last one left off.
STABLE_CONNECTION_SECONDS = 10.0
WS_OPEN_TIMEOUT_SECONDS = 10.0
# Keepalive pings detect a dead Asterisk (or a silent NAT drop) on an otherwise idle socket.
WS_PING_INTERVAL_SECONDS = 20.0
WS_PING_TIMEOUT_SECONDS = 20.0
WS_CLOSE_TIMEOUT_SECONDS = 5.0
# Large enough for events carrying many channelvars; an event bigger than this is a fault.
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# RFC 6455 code for "closed without a close frame", used when the socket just dropped.
_ABNORMAL_CLOSURE = 1006
_HTTP_UNAUTHORIZED = 401
_HTTP_NOT_FOUND = 404

EventHandler = Callable[[Event], None]
OnConnected = Callable[[int], Awaitable[None]]


class EventStream:
    """Receive ARI events for one Stasis app, reconnecting for as long as it runs.

    ``on_connected(n)`` is awaited after each successful connect (``n`` is 1 for the first)
    before any event of that connection is dispatched. ``connects`` and ``reconnects`` count
    successful connections. A stream runs once: after :meth:`stop` it does not restart.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        *,
        on_connected: OnConnected | None = None,
        ssl: ssllib.SSLContext | None = None,
        subscribe_all: bool = False,
        types: frozenset[str] | None = None,
        slow_handler_seconds: float = SLOW_HANDLER_SECONDS,
        stable_connection_seconds: float = STABLE_CONNECTION_SECONDS,
    ) -> None:
        self.app = app
        self.url = events_url(base_url, app, subscribe_all=subscribe_all)
        if ssl is not None and not self.url.startswith("wss:"):
            raise ValueError(f"an SSL context needs an https ARI base URL, got {base_url!r}")
        self.connects = 0
        self.reconnects = 0
        # every frame read, and those dropped unparsed because their type is not in ``types``
        self.received = 0
        self.ignored = 0
        self._types = types
        self._username = username
        self._authorization = basic_authorization(username, password)
        self._on_connected = on_connected
        self._ssl = ssl
        self._slow_handler_seconds = slow_handler_seconds
        self._stable_connection_seconds = stable_connection_seconds
        self._stopping = asyncio.Event()
        self._reconnecting = True
        self._running = False
        self._ws: ClientConnection | None = None
        self._close_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def run(self, handler: EventHandler) -> None:
        """Connect, hand events to ``handler`` and reconnect until :meth:`stop` is called.

        ``handler`` is called synchronously for each event and must not block; its exceptions
        are logged and the event skipped. Only cancellation or an invalid URL ends this
        coroutine early.
        """
        if self._running:
            raise RuntimeError("EventStream.run() is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        attempt = 0
        try:
            while not self._stopping.is_set():
                opened_at: float | None = None
                try:
                    async with self._connect() as ws:
                        opened_at = loop.time()
                        self._ws = ws
                        await self._opened()
                        await self._dispatch_until_closed(ws, handler)
                    reason = _close_description(ws)
                except InvalidURI:
                    raise
                except (OSError, TimeoutError, InvalidHandshake) as exc:
                    reason = self._connect_failure_description(exc)
                except Exception as exc:
                    # A bug here must not leave the bridge deaf for good: log it loudly and
                    # let the backoff below bring the socket back.
                    logger.exception("Unexpected error on the ARI event socket")
                    reason = f"ARI event socket failed ({type(exc).__name__})"
                finally:
                    self._ws = None
                if self._stopping.is_set() or not self._reconnecting:
                    break
                if opened_at is not None and (
                    loop.time() - opened_at >= self._stable_connection_seconds
                ):
                    attempt = 0
                delay = next_delay(attempt)
                attempt += 1
                logger.warning("%s; reconnecting in %.1f s", reason, delay)
                await self._sleep_unless_stopped(delay)
        finally:
            self._running = False
            if self._close_task is not None:
                await self._close_task
                self._close_task = None
        logger.info("ARI event stream for app %s stopped", self.app)

    def stop_reconnecting(self) -> None:
        """Keep reading the current connection, but let :meth:`run` return when it closes
        instead of connecting again (a connect would register the app again)."""
        self._reconnecting = False

    def stop(self) -> None:
        """Ask :meth:`run` to return; the event being handled, if any, is allowed to finish."""
        self._stopping.set()
        ws = self._ws
        if ws is not None and self._close_task is None:
            # recv() is waiting on the socket; closing it is what wakes the run loop.
            self._close_task = asyncio.get_running_loop().create_task(ws.close())

    # ----------------------------------------------------------------------- connection

    def _connect(self) -> connect:
        # websockets rejects an ``ssl`` argument (even None) for a ws:// URL, so only pass it
        # when set; Any because it travels through connect()'s **kwargs.
        extra: dict[str, Any] = {}
        if self._ssl is not None:
            extra["ssl"] = self._ssl
        return connect(
            self.url,
            additional_headers={"Authorization": self._authorization},
            # ARI is on the local network; an HTTP(S)_PROXY meant for the bots must not apply.
            proxy=None,
            open_timeout=WS_OPEN_TIMEOUT_SECONDS,
            ping_interval=WS_PING_INTERVAL_SECONDS,
            ping_timeout=WS_PING_TIMEOUT_SECONDS,
            close_timeout=WS_CLOSE_TIMEOUT_SECONDS,
            max_size=WS_MAX_MESSAGE_BYTES,
            **extra,
        )

    async def _opened(self) -> None:
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        logger.info(
            "ARI event socket connected to %s; app %s registered (connection #%d)",
            self.url,
            self.app,
            self.connects,
        )
        if self._on_connected is None:
            return
        try:
            await self._on_connected(self.connects)
        except Exception:
            # Events still have to flow, or calls would hang; reconciliation is best effort.
            logger.exception(
                "on_connected callback failed for connection #%d; continuing with live events, "
                "calls that changed while disconnected may be out of sync",
                self.connects,
            )

    def _connect_failure_description(self, exc: BaseException) -> str:
        if isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            if status == _HTTP_UNAUTHORIZED:
                return (
                    f"ARI rejected user {self._username!r} at {self.url} (HTTP 401); "
                    "check the user and password in ari.conf"
                )
            if status == _HTTP_NOT_FOUND:
                return (
                    f"ARI events endpoint not found at {self.url} (HTTP 404); check that "
                    "res_ari is loaded and the http.conf prefix matches the base URL"
                )
            return f"ARI event socket handshake refused at {self.url} (HTTP {status})"
        if isinstance(exc, TimeoutError):
            return f"ARI event socket at {self.url} did not answer within the open timeout"
        return (
            f"Cannot connect ARI event socket to {self.url} ({exc or type(exc).__name__}); "
            "is Asterisk running with http.conf enabled on that address?"
        )

    async def _sleep_unless_stopped(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # ----------------------------------------------------------------------- dispatch

    async def _dispatch_until_closed(self, ws: ClientConnection, handler: EventHandler) -> None:
        while not self._stopping.is_set():
            try:
                message = await ws.recv()
            except ConnectionClosed:
                return
            self.received += 1
            event = self._decode(message)
            if event is None:
                continue
            if event.type == "ApplicationReplaced":
                logger.warning(
                    "Another ARI client registered app %s; this process no longer receives "
                    "its events",
                    self.app,
                )
            self._dispatch(handler, event)

    def _decode(self, message: str | bytes) -> Event | None:
        # One msgspec pass decodes and validates the frame; a type outside ``self._types``
        # comes back as None without its payload being validated.
        try:
            event = parse_event(message, types=self._types)
        except EventSchemaError as exc:
            if "_json" in exc.messages:
                logger.warning("Skipping ARI frame that is not JSON: %s", exc)
            elif exc.event_type is None and self._types is not None:
                self.ignored += 1  # no readable type, so not one of ``self._types``
            else:
                logger.warning("Skipping malformed ARI event: %s", exc)
            return None
        if event is None and self._types is not None:
            self.ignored += 1
        return event

    def _dispatch(self, handler: EventHandler, event: Event) -> None:
        started = time.monotonic()
        try:
            handler(event)
        except Exception:
            logger.exception(
                "Routing ARI %s (channel %s) failed; event skipped",
                event.type,
                event.channel_id,
            )
        elapsed = time.monotonic() - started
        if elapsed > self._slow_handler_seconds:
            logger.warning(
                "Routing ARI %s (channel %s) took %.3f s on the reader; it must not block",
                event.type,
                event.channel_id,
                elapsed,
            )


def events_url(base_url: str, app: str, *, subscribe_all: bool = False) -> str:
    """Websocket URL for ``app`` from the REST base URL (``http://host:8088/ari``)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"ARI base URL must be http(s) or ws(s), got {base_url!r}")
    query = urlencode({"app": app, "subscribeAll": "true" if subscribe_all else "false"})
    path = parts.path.rstrip("/") + "/events"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def _close_description(ws: ClientConnection) -> str:
    code = ws.close_code if ws.close_code is not None else _ABNORMAL_CLOSURE
    reason = f", {ws.close_reason}" if ws.close_reason else ""
    return f"ARI event socket closed (code {code}{reason})"
