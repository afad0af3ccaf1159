"""The Stasis application: routes ARI events to per-call sessions.

Channels enter the app in three roles, told apart by their Stasis arguments or by
``replace_channel``:

- ``inbound``: a carrier call (dialplan ``Stasis(app,inbound)``) -> a new CallSession;
- ``bot,<interaction id>``: the bot leg the app created -> dial it;
- a Local channel with ``replace_channel`` = a bot leg: the bot's REFER (core transfer mode).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from ari_app import lifecycle
from ari_app.ari import AriError, AriNotFound, AriRest, Channel, Event, EventStream
from ari_app.config import Config, client_ssl_context
from ari_app.routing import profile_for
from ari_app.services import side_services
from ari_app.session import CallSession, SessionObserver
from ari_app.store import InteractionStore, open_store

log = logging.getLogger(__name__)


class BridgeApp:
    def __init__(self, config: Config, ari: AriRest, store: InteractionStore) -> None:
        self.config = config
        self.ari = ari
        self.store = store
        self.sessions: dict[str, CallSession] = {}  # by caller channel id
        self.observer: SessionObserver | None = None  # metrics; set by services.side_services
        self._by_channel: dict[str, CallSession] = {}
        self.stream = EventStream(
            config.ari_url,
            config.ari["username"],
            config.ari_password,
            config.app_name,
            on_connected=self.reconcile,
            ssl=ari_ssl_context(config),
        )
        self._handlers: dict[str, Callable[[Event], Awaitable[None]]] = {
            "StasisStart": self.on_stasis_start,
            "StasisEnd": self.on_channel_gone,
            "ChannelDestroyed": self.on_channel_gone,
            "ChannelHangupRequest": self.on_hangup_request,
            "Dial": self.on_dial,
            "ChannelEnteredBridge": self.on_entered_bridge,
        }

    async def run(self) -> None:
        await self.stream.run(self.handle)

    def stop(self) -> None:
        self.stream.stop()

    async def handle(self, event: Event) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            return
        try:
            await handler(event)
        except AriNotFound as exc:
            # a channel vanished mid-operation: normal telephony; its own events decide
            log.info("%s for %s: %s", event.type, event.channel.id if event.channel else "-", exc)
        except AriError as exc:
            log.warning(
                "%s handling %s for %s: %s",
                type(exc).__name__,
                event.type,
                event.channel.id if event.channel else "-",
                exc,
            )
            await self._fail_safe(event, f"ari_error_{exc.status}")
        except Exception as exc:
            log.exception("unexpected error handling %s", event.type)
            await self._fail_safe(event, f"internal_error_{type(exc).__name__}")

    async def _fail_safe(self, event: Event, reason: str) -> None:
        """Never leave a caller stranded in the app because handling an event failed."""
        session = self._by_channel.get(event.channel.id) if event.channel else None
        if session is None or session.finished:
            return
        try:
            await session.fail_safe(reason)
        except AriError as exc:
            log.warning("call %s: fail-safe routing failed too: %s", session.interaction_id, exc)

    # -- events --------------------------------------------------------------------------

    async def on_stasis_start(self, event: Event) -> None:
        channel = event.channel
        assert channel is not None
        args = list(event.args or ())
        if event.replace_channel is not None:
            await self._on_transfer(channel, event.replace_channel)
        elif args[:1] == ["inbound"]:
            await self._on_inbound(channel)
        elif args[:1] == ["bot"]:
            session = self._by_channel.get(channel.id)
            if session:
                await session.bot_entered_stasis()
            else:
                log.warning("bot channel %s has no call; hanging it up", channel.name)
                await self.ari.hangup(channel.id)
        else:
            log.warning("channel %s entered with unknown args %r; hanging up", channel.name, args)
            await self.ari.hangup(channel.id)

    async def _on_inbound(self, channel: Channel) -> None:
        dialled = channel.dialplan.exten if channel.dialplan else ""
        profile = profile_for(self.config, dialled)
        session = CallSession(
            self.ari, self.config, self.store, profile, channel, observer=self.observer
        )
        self.sessions[channel.id] = session
        self._by_channel[channel.id] = session
        self._by_channel[f"bot-{session.interaction_id}"] = session
        log.info(
            "call %s: %s from %s to %s, bot profile %s",
            session.interaction_id,
            channel.name,
            channel.caller.number if channel.caller else "?",
            dialled,
            profile.name,
        )
        await session.start()

    async def _on_transfer(self, local: Channel, replaced: Channel) -> None:
        session = self._by_channel.get(replaced.id)
        if session is None or replaced.id != session.bot_channel_id:
            log.warning(
                "transfer channel %s replaces %s, which is no bot leg of ours; hanging it up",
                local.name,
                replaced.name,
            )
            await self.ari.hangup(local.id)
            return
        self._by_channel[local.id] = session
        await session.transfer_requested(local)

    async def on_dial(self, event: Event) -> None:
        peer = event.peer
        if peer is None:
            return
        session = self._by_channel.get(peer.id)
        if session and peer.id == session.bot_channel_id:
            await session.bot_dial_result(event.dialstatus or "")
        elif event.dialstatus == "ANSWER" and event.caller and event.caller.id in self.sessions:
            # Queue() reached an agent for a caller the app follows after the queue
            await self.sessions[event.caller.id].agent_answered(peer.id)

    async def on_hangup_request(self, event: Event) -> None:
        await self.on_channel_gone(event)

    async def on_channel_gone(self, event: Event) -> None:
        """StasisEnd, ChannelHangupRequest or ChannelDestroyed of a channel of ours."""
        channel = event.channel
        if channel is None:
            return
        session = self._by_channel.get(channel.id)
        if session is None:
            return
        if channel.id == session.caller_id:
            if event.type == "ChannelHangupRequest":
                return  # StasisEnd follows; the caller is still ours until then
            if event.type == "ChannelDestroyed":
                # the end of the call, wherever the caller was (the app subscribed to it
                # before continuing it into the queue or the post-bot context)
                await session.caller_ended()
                self._forget(session)
            elif not session.finished:
                await session.caller_gone()
        elif channel.id == session.bot_channel_id:
            await session.bot_gone(event.type, event.cause)
        elif event.type == "ChannelDestroyed":
            self._by_channel.pop(channel.id, None)

    async def on_entered_bridge(self, event: Event) -> None:
        session = self.sessions.get(event.channel.id) if event.channel else None
        if session is not None and event.bridge is not None:
            await session.caller_entered_bridge(event.bridge)

    def adopt(self, session: CallSession) -> None:
        """Follow a call the app took over from its record (lifecycle.reconcile)."""
        self.sessions[session.caller_id] = session
        for channel_id in (session.caller_id, session.bot_channel_id):
            if channel_id:
                self._by_channel[channel_id] = session

    def _forget(self, session: CallSession) -> None:
        log.info("call %s: ended, no longer followed", session.interaction_id)
        self.sessions.pop(session.caller_id, None)
        for channel_id in [k for k, v in self._by_channel.items() if v is session]:
            del self._by_channel[channel_id]

    # -- reconnect -----------------------------------------------------------------------

    async def reconcile(self, connection: int) -> None:
        """After every connect, the first included: sessions and this node's open records
        brought in line with the channels Asterisk has (ari_app/lifecycle.py)."""
        if connection == 1:
            log.info("ARI event stream connected; app %s registered", self.config.app_name)
        await lifecycle.reconcile(self, connection)


def ari_ssl_context(config: Config) -> ssl.SSLContext | None:
    """TLS settings for an https:// ARI url: verify Asterisk against ``ari.ca_file``.

    An empty ``ari.ca_file`` means the system trust store; None for a plain http:// url.
    Host names and certificate chains are always checked.
    """
    if not config.ari_url.lower().startswith("https:"):
        return None
    try:
        return client_ssl_context(config, str(config.ari.get("ca_file") or ""))
    except FileNotFoundError as exc:
        raise SystemExit(f"ari.ca_file: {exc} (`make certs` makes a dev CA)") from exc


async def run_app(config: Config) -> None:
    if not config.ari_password:
        raise SystemExit("no ARI password: set BOTBRIDGE_ARI_PASSWORD or run `make setup`")
    store = await asyncio.to_thread(open_store, config)  # migrates the schema to head
    log.info("interaction store %r, node %s", store, store.node)
    async with AriRest(
        config.ari_url,
        config.ari["username"],
        config.ari_password,
        ssl=ari_ssl_context(config),
    ) as ari:
        app = BridgeApp(config, ari, store)
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.stop)
        log.info("bot bridge app %s starting against %s", config.app_name, config.ari_url)
        async with side_services(config, store, app):  # HTTP, metrics, report schedules
            await app.run()
    store.close()
