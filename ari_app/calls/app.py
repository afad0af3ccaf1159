"""The Stasis application: routes ARI events to per-call sessions.

Channels enter the app in four roles, told apart by Stasis arguments or ``replace_channel``:
- ``inbound``: a carrier call (dialplan ``Stasis(app,inbound)``) -> a new CallSession, if
  admission control lets it in (else it is shed: fallback queue or 503, never half-handled);
- ``bot,<interaction id>``: the bot leg the app created -> dial it;
- a Local channel with ``replace_channel`` = a bot leg: the bot's REFER (core transfer mode);
- ``queue_ended,<QUEUESTATUS>``: a caller of ours back from a queue without an agent;
- ``consult,hdr...``: a bot's consult call, and ``consult_agent,<iid>`` the agent leg the app
  made for it (warm transfer, calls/consult.py).

Routing (:meth:`BridgeApp.dispatch`) runs on the event reader and only posts each event to
its call's queue (calls/dispatch.py); all that talks to Asterisk runs in the call's own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ari_app.ari import AriError, AriNotFound, Channel, Event
from ari_app.calls import consult, reconcile
from ari_app.calls import drain as draining
from ari_app.calls.admission import Admission
from ari_app.calls.availability import QueueAvailability
from ari_app.calls.bots import BotPool
from ari_app.calls.bye_context import ByeContexts
from ari_app.calls.carrier import split_inbound_args
from ari_app.calls.control import CallControl
from ari_app.calls.dispatch import Dispatcher
from ari_app.calls.drain import APP_DRAINING
from ari_app.calls.logcontext import bind_call, call_fields
from ari_app.calls.reconcile import PROBE_ARGS
from ari_app.calls.routing import profile_for
from ari_app.calls.services import (
    CallServices,
    SessionObserver,
    bot_channel_id_for,
    read_queue_availability,
)
from ari_app.calls.session import CallSession
from ari_app.calls.states import CallState
from ari_app.calls.transfer import TransferDecision
from ari_app.config import Config, answering_agent
from ari_app.config.dialplan import CONSULT_AGENT_ARG, CONSULT_ARG
from ari_app.connect import event_stream
from ari_app.outcomes import Outcome
from ari_app.store import InteractionStore
from ari_app.store.writer import RecordWriter, writer_for

log = logging.getLogger(__name__)

# dialplan context that refuses a shed call with 503 (extensions.conf)
REFUSE_CONTEXT = "botbridge-refuse"
# how long a stopping app lets calls' pending events finish before it closes the records
STOP_GRACE_SECONDS = 5.0
# ContactStatusChange statuses that mean a bot's SIP OPTIONS probe failed (any other status,
# Reachable, Unknown, NonQualified..., leaves the bot eligible), and the state of a health
# endpoint whose bot answers its probes (GET /endpoints)
UNREACHABLE_STATUS = "Unreachable"
ENDPOINT_ONLINE = "online"

# the app's own event, posted to a call whose max_bot_seconds passed (never asked of ARI)
BOT_TIME_UP = "BotbridgeBotTimeUp"
CallEvent = tuple[CallSession, Event]


class BridgeApp:
    def __init__(
        self,
        config: Config,
        ari: CallControl,
        store: InteractionStore,
        records: RecordWriter | None = None,
        observer: SessionObserver | None = None,
        bye_contexts: ByeContexts | None = None,
    ) -> None:
        self.config = config
        self.ari = ari
        self.store = store
        self.records = records or writer_for(store, config)
        self.sessions: dict[str, CallSession] = {}  # by caller channel id
        self.shed: Counter[str] = Counter()  # new calls shed, by reason
        self.dispatcher: Dispatcher[CallEvent] = Dispatcher(self._handle_posted)
        self.admission = Admission(config.limits)
        self._by_channel: dict[str, CallSession] = {}
        # what every call uses: built here once, handed to each session (new, shed, adopted)
        self.services = CallServices(
            ari=ari,
            config=config,
            records=self.records,
            availability=QueueAvailability(
                functools.partial(read_queue_availability, ari),
                config.bridge.availability_cache_seconds,
            ),
            observer=observer,  # the metrics
            bye_contexts=bye_contexts,  # [bye_context], when on
            on_bot_channel=self._index_bot_channel,
            on_bot_time_up=self._bot_time_up,
        )
        self.bots: BotPool = self.services.bots
        # health endpoint (pjsip.conf) -> the bot URI it probes
        self.bot_health = {name: uri for name, (uri, _) in config.bot_health_endpoints().items()}
        self.draining = False
        self.stream = event_stream(config, on_connected=self.reconcile, types=EVENT_TYPES)

    async def run(self) -> None:
        self.records.start()
        try:
            await self.stream.run(self.dispatch)
            if self.draining:
                await self.pick_up_strays()
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dispatcher.idle(), STOP_GRACE_SECONDS)
            await self.records.close()

    def stop(self) -> None:
        self.stream.stop()

    async def drain(self) -> None:
        """SIGTERM: calls/drain.py."""
        await draining.drain(self, STOP_GRACE_SECONDS)

    async def pick_up_strays(self) -> None:
        await draining.pick_up_strays(self)

    @property
    def bye_contexts(self) -> ByeContexts | None:
        """[bye_context]: the BYE copies the calls use (None when off)."""
        return self.services.bye_contexts

    @property
    def active_calls(self) -> int:
        """Calls in the bot phase or being routed (not yet in a queue, resolved or gone)."""
        return sum(1 for s in self.sessions.values() if not s.handed_off)

    @property
    def bot_uris(self) -> list[str]:
        """Every bot URI of the profiles, once each, in order."""
        uris = (b.uri for p in self.config.profiles.values() for b in p.targets if b.uri)
        return list(dict.fromkeys(uris))

    def bot_active_calls(self) -> dict[str, int]:
        """Calls dialling or talking to each bot URI (botbridge_bot_active_calls)."""
        return dict(self.bots.active_by_uri(self.bot_uris))

    def bot_reachability(self) -> dict[str, bool]:
        return {uri: self.bots.reachable(uri) for uri in self.bot_uris}

    # -- routing: on the reader, never waits ------------------------------------------------

    def dispatch(self, event: Event) -> None:
        """Post ``event`` to its call's queue (creating the call for a new inbound channel)."""
        session = self._route(event)
        if session is not None:
            self.dispatcher.post(session.interaction_id, (session, event))

    async def handle(self, event: Event) -> None:
        """Route and handle one event now, and wait for what it started (tests, scripts)."""
        self.dispatch(event)
        await self.dispatcher.idle()

    def _route(self, event: Event) -> CallSession | None:
        handling = EVENTS.get(event.type)
        return handling.route(self, event) if handling is not None else None

    def _route_contact_status(self, event: Event) -> None:
        self._bot_health_changed(event.aor, event.contact_status)

    def _route_dial(self, event: Event) -> CallSession | None:
        peer = event.peer
        if peer is None:
            return None
        session = self._by_channel.get(peer.id)
        if session is not None and (peer.id == session.bot_channel_id or session.consult):
            return session
        if event.dialstatus == "ANSWER" and event.caller is not None:
            # Queue() reached an agent for a caller the app follows after the queue (or for
            # the queue half of a consult's agent leg)
            return self._by_channel.get(event.caller.id)
        return None

    def _route_gone(self, event: Event) -> CallSession | None:
        return self._by_channel.get(event.channel.id) if event.channel is not None else None

    def _route_stasis_start(self, event: Event) -> CallSession | None:
        channel = event.channel
        assert channel is not None
        args = list(event.args or ())
        replaced = event.replace_channel
        if replaced is not None:
            session = self._by_channel.get(replaced.id)
            if session is not None and replaced.id == session.bot_channel_id:
                self._index(session, channel.id)
                return session
            log.warning(
                "transfer channel %s replaces %s, which is no bot leg of ours; hanging it up",
                channel.name,
                replaced.name,
            )
        elif args[:1] == ["inbound"]:
            if channel.id in self.sessions:
                # already taken up: reconciliation found it waiting (calls/reconcile.py)
                log.info("caller %s is followed already; StasisStart ignored", channel.name)
                return None
            reason = (
                APP_DRAINING
                if self.draining
                else self.admission.refusal(self.active_calls, self.dispatcher.pending)
            )
            if reason is None:
                # Stasis(app,inbound,<business_hours>,hdr.<name>=<value>...): calls/carrier.py
                plain, headers, queues = split_inbound_args(args[1:])
                session = self._new_session(channel, ",".join(plain) if plain else None)
                session.carrier_args, session.queue_args = headers, queues
                return session
            self._shed(channel, reason)
            return None
        elif args[:1] == [PROBE_ARGS]:
            return None  # reconciliation's probe channel: it hangs it up itself
        elif args[:1] == ["queue_ended"] and channel.id in self.sessions:
            return self.sessions[channel.id]  # a caller of ours back from its queue
        elif args[:1] == [CONSULT_ARG]:
            headers = consult.consult_headers(args[1:])
            session = consult.find_call(self.sessions.values(), headers)
            if session is not None:
                return session
            log.warning("consult %s names no live call; refused", channel.name)
            self.dispatcher.spawn(self.ari.hangup(channel.id, consult.REFUSED), "refuse")
            return None
        elif args[:1] in (["bot"], [CONSULT_AGENT_ARG]):
            session = self._by_channel.get(channel.id)
            if session is not None:
                return session
            log.warning("bot channel %s has no call; hanging it up", channel.name)
        else:
            log.warning("channel %s entered with unknown args %r; hanging up", channel.name, args)
        self.dispatcher.spawn(self.ari.hangup(channel.id), f"hang up {channel.name}")
        return None

    def _new_session(self, channel: Channel, availability: str | None) -> CallSession:
        session = self.session_for(channel, dialplan_availability=availability)
        session.bot_channel_id = bot_channel_id_for(session.interaction_id)
        self.adopt(session)
        log.info(
            "call %s: %s from %s to %s, bot profile %s",
            session.interaction_id,
            channel.name,
            channel.caller.number if channel.caller else "?",
            channel.dialplan.exten if channel.dialplan else "",
            session.profile.name,
            extra=call_fields(session),
        )
        return session

    def session_for(
        self,
        caller: Channel,
        *,
        state: CallState = CallState.STARTED,
        dialplan_availability: str | None = None,
    ) -> CallSession:
        """A new or shed call's session: the profile its dialled number names, the app's
        services (reconciliation rebuilds a session from its record with the same)."""
        profile = profile_for(self.config, caller.dialplan.exten if caller.dialplan else "")
        return CallSession(
            self.services, profile, caller, state=state, dialplan_availability=dialplan_availability
        )

    def _shed(self, channel: Channel, reason: str) -> None:
        """Overload: the call skips the bot, in one piece (docs/performance.md).

        Sent to the fallback queue, it is followed like any queued call (the agent's answer
        and the end are recorded); refused, its record is closed at once."""
        self.shed[reason] += 1
        # a draining app never refuses: its callers are not overloading anything
        draining = reason == APP_DRAINING
        refuse = self.config.limits.overload_action == "refuse" and not draining
        outcome = Outcome.BYPASSED if draining else Outcome.OVERLOADED
        session = self.session_for(channel, state=CallState.ERROR if refuse else CallState.QUEUED)
        self.records.create(session.interaction_id, **session.shed_record(outcome, reason))
        if self.services.observer is not None:
            self.services.observer.outcome(outcome)
        log.warning(
            "call %s: %s shed (%s), %s",
            session.interaction_id,
            channel.name,
            reason,
            "refused" if refuse else f"to {session.profile.fallback_queue}",
            extra=call_fields(session),
        )
        if refuse:
            job = self.ari.continue_in_dialplan(channel.id, REFUSE_CONTEXT, "s")
        else:
            self.adopt(session)
            decision = TransferDecision(queue=session.profile.fallback_queue, error=reason)
            job = session.route_caller(decision, outcome)
        self.dispatcher.spawn(job, f"shed {channel.name}")

    def _bot_time_up(self, caller_id: str) -> None:
        """A call's max_bot_seconds passed: an event of the app's own, in the call's order."""
        session = self.sessions.get(caller_id)
        if session is not None and not session.handed_off:
            event = Event(type=BOT_TIME_UP, application=self.config.ari.app)
            self.dispatcher.post(session.interaction_id, (session, event))

    # -- handling: in the call's own task ---------------------------------------------------

    async def _handle_posted(self, key: str, item: CallEvent) -> None:
        session, event = item
        bind_call(session)  # log records of this task carry the call's id and state
        try:
            handling = EVENTS.get(event.type)  # routed: the type is in the table
            if handling is not None and handling.apply is not None:
                await handling.apply(self, session, event)
            if session.consult is not None:
                await consult.tidy(session)  # the call left its bot while it consulted
        except AriNotFound as exc:
            # a channel vanished mid-operation: normal telephony; its own events decide
            log.info("call %s: %s: %s", session.interaction_id, event.type, exc)
        except AriError as exc:
            log.warning(
                "call %s: %s handling %s: %s",
                session.interaction_id,
                type(exc).__name__,
                event.type,
                exc,
            )
            await self.fail_safe(session, f"ari_error_{exc.status}")
        except Exception as exc:
            log.exception(
                "call %s: unexpected error handling %s", session.interaction_id, event.type
            )
            await self.fail_safe(session, f"internal_error_{type(exc).__name__}")

    async def _apply_stasis_start(self, session: CallSession, event: Event) -> None:
        channel = event.channel
        assert channel is not None
        args = list(event.args or ())
        if event.replace_channel is not None:
            await session.transfer_requested(channel)
        elif channel.id == session.caller_id:
            await session.caller_entered(args)
        elif args[:1] == [CONSULT_ARG]:
            await consult.consult_arrived(session, channel, args[1:])
        elif args[:1] == [CONSULT_AGENT_ARG]:
            await consult.agent_leg_entered(session, channel.id)
        else:
            await session.bot_entered_stasis(channel.id)

    async def _apply_dial(self, session: CallSession, event: Event) -> None:
        assert event.peer is not None
        if event.peer.id == session.bot_channel_id:
            await session.bot_dial_result(event.dialstatus or "")
        elif not await consult.dial_result(session, event):
            await session.agent_answered(event.peer.id, answering_agent(event.peer.name))

    async def _channel_gone(self, session: CallSession, event: Event) -> None:
        """StasisEnd or ChannelDestroyed of a channel of the call."""
        channel = event.channel
        if channel is None:
            return
        if channel.id == session.caller_id:
            if not session.handed_off:
                await session.caller_gone()
            if event.type == "ChannelDestroyed" or not session.followed:
                # the end of the call: the caller's ChannelDestroyed wherever it was (a
                # followed caller's events keep coming after it left Stasis), or its
                # StasisEnd when it was not followed (hung up in the app; the app gets no
                # event of the channel after that one)
                await session.caller_ended()
                await consult.call_ended(session)
                self.forget(session)
        elif channel.id == session.bot_channel_id:
            if event.type == "ChannelDestroyed":
                await session.bot_destroyed(event.cause)
            else:
                await session.bot_left()
        elif await consult.channel_gone(session, channel.id, event):
            pass
        elif event.type == "ChannelDestroyed":
            self._by_channel.pop(channel.id, None)

    async def fail_safe(self, session: CallSession, reason: str) -> None:
        """Never leave a caller stranded in the app because handling an event failed."""
        if session.handed_off:
            return
        try:
            await session.fail_safe(reason)
        except AriError as exc:
            log.warning("call %s: fail-safe routing failed too: %s", session.interaction_id, exc)

    def adopt(self, session: CallSession) -> None:
        """Follow a call: a new one, or one taken over from its record (calls/reconcile.py)."""
        self.sessions[session.caller_id] = session
        for channel_id in (session.caller_id, session.bot_channel_id):
            if channel_id:
                self._index(session, channel_id)

    def _index(self, session: CallSession, channel_id: str) -> None:
        self._by_channel[channel_id] = session
        session.channel_ids.add(channel_id)

    def _bot_health_changed(self, aor: str | None, status: str | None) -> None:
        uri = self.bot_health.get(aor or "")
        if uri is None:
            return
        reachable = status != UNREACHABLE_STATUS
        if reachable != self.bots.reachable(uri):
            log.warning("bot %s is %s (SIP OPTIONS)", uri, status)
        self.bots.set_reachable(uri, reachable)

    async def watch_bot_health(self) -> None:
        """At every connect: subscribe to the bot health endpoints (their ContactStatusChange
        events), then read their present state in one request. Nothing when no bot is probed."""
        if not self.bot_health:
            return
        sources = [f"endpoint:PJSIP/{name}" for name in self.bot_health]
        await self.ari.subscribe(self.config.ari.app, sources)
        states = await self.ari.endpoint_states("PJSIP")
        for name, uri in self.bot_health.items():
            self.bots.set_reachable(uri, states.get(name) == ENDPOINT_ONLINE)
        health = (f"{uri} {states.get(name, 'unknown')}" for name, uri in self.bot_health.items())
        log.info("bot health: %s", ", ".join(health))

    def _index_bot_channel(self, caller_id: str, channel_id: str) -> None:
        """A call dials its next bot on a new leg: route that leg's events to the call."""
        session = self.sessions.get(caller_id)
        if session is not None:
            self._index(session, channel_id)

    def forget(self, session: CallSession) -> None:
        log.info(
            "call %s: ended, no longer followed", session.interaction_id, extra=call_fields(session)
        )
        self.sessions.pop(session.caller_id, None)
        if self.bye_contexts is not None and session.bot_call_id:
            self.bye_contexts.forget(session.bot_call_id)  # followed from the bot's answer
        for channel_id in session.channel_ids:
            if self._by_channel.get(channel_id) is session:
                del self._by_channel[channel_id]

    # -- reconnect -----------------------------------------------------------------------

    async def reconcile(self, connection: int, *, handover: bool = False) -> None:
        """After every connect, the first included: only the wanted event types asked for,
        then sessions and this node's open records brought in line with the channels
        Asterisk has (calls/reconcile.py; ``handover``: calls/handover.py)."""
        if connection == 1:
            log.info("ARI event stream connected; app %s registered", self.config.ari.app)
        try:
            await self.ari.set_event_filter(self.config.ari.app, sorted(EVENT_TYPES))
        except AriError as exc:
            log.warning("ARI event filter not set (%s); unwanted events are dropped here", exc)
        try:
            await self.watch_bot_health()
        except AriError as exc:
            log.warning("bot health not read (%s); every bot counts as reachable", exc)
        await self.records.flush()
        await reconcile.reconcile(self, connection, handover=handover)


@dataclass(frozen=True)
class EventHandling:
    """What the app does with one event type: ``route`` on the event reader (never waits;
    the call the event belongs to, None for none), then ``apply`` in that call's task."""

    route: Callable[[BridgeApp, Event], CallSession | None]
    apply: Callable[[BridgeApp, CallSession, Event], Awaitable[None]] | None = None


# The event types the app acts on, and how: the one table both steps read; Asterisk is asked
# (eventFilter) for no others. Not asked for, as they repeat what these say:
# ChannelHangupRequest (StasisEnd follows), ChannelEnteredBridge (the agent's Dial ANSWER).
EVENTS: dict[str, EventHandling] = {
    "StasisStart": EventHandling(BridgeApp._route_stasis_start, BridgeApp._apply_stasis_start),
    "Dial": EventHandling(BridgeApp._route_dial, BridgeApp._apply_dial),
    "StasisEnd": EventHandling(BridgeApp._route_gone, BridgeApp._channel_gone),
    "ChannelDestroyed": EventHandling(BridgeApp._route_gone, BridgeApp._channel_gone),
    "ContactStatusChange": EventHandling(BridgeApp._route_contact_status),
    BOT_TIME_UP: EventHandling(lambda app, event: None, lambda app, s, event: s.bot_time_up()),
    # the bot's REFER while it consults (its leg in ari-only transfer mode: calls/consult.py)
    "ChannelTransfer": EventHandling(
        BridgeApp._route_gone, lambda app, s, event: consult.refer_received(s, event)
    ),
}
# ApplicationReplaced: the replaced instance lets go of its calls (ari_app/calls/handover.py)
EVENT_TYPES = frozenset({*EVENTS, "ApplicationReplaced"}) - {BOT_TIME_UP}
