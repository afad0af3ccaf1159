"""The Stasis application: routes ARI events to per-call sessions.

Channels enter the app in three roles, told apart by their Stasis arguments or by
``replace_channel``:

- ``inbound``: a carrier call (dialplan ``Stasis(app,inbound)``) -> a new CallSession, if
  admission control lets it in (else it is shed: fallback queue or 503, never half-handled);
- ``bot,<interaction id>``: the bot leg the app created -> dial it;
- a Local channel with ``replace_channel`` = a bot leg: the bot's REFER (core transfer mode).

Routing (:meth:`BridgeApp.dispatch`) is synchronous and runs on the event reader: it only
looks up or creates the call an event belongs to and posts the event to that call's queue
(ari_app/calls/dispatch.py). Everything that talks to Asterisk runs in the call's own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter

from ari_app.ari import AriError, AriNotFound, Channel, Event
from ari_app.calls import reconcile
from ari_app.calls.admission import Admission
from ari_app.calls.availability import QueueAvailability
from ari_app.calls.bots import BotPool
from ari_app.calls.bye_context import ByeContexts
from ari_app.calls.control import CallControl
from ari_app.calls.dispatch import Dispatcher
from ari_app.calls.logcontext import bind_call, call_fields
from ari_app.calls.reconcile import PROBE_ARGS
from ari_app.calls.routing import profile_for
from ari_app.calls.session import (
    CallSession,
    SessionObserver,
    bot_channel_id_for,
    read_queue_availability,
)
from ari_app.calls.states import CallState
from ari_app.calls.transfer import (
    VAR_ERROR,
    VAR_INTERACTION_ID,
    VAR_OUTCOME,
    VAR_PROFILE,
    VAR_QUEUE,
    as_channel_variables,
)
from ari_app.config import Config
from ari_app.connect import event_stream
from ari_app.outcomes import Outcome
from ari_app.store import InteractionStore
from ari_app.store.writer import RecordWriter, writer_for

log = logging.getLogger(__name__)

# The event types the app acts on. Asterisk is asked (eventFilter) to send no others, and the
# reader drops any other unparsed. Each is needed: a channel leaving the app (StasisEnd) or
# gone (ChannelDestroyed); the bot's and, for a followed caller, the agent's Dial status. Not
# asked for, as they only repeat what these say: ChannelHangupRequest (StasisEnd follows)
# and ChannelEnteredBridge (an agent's answer is its Dial ANSWER); the reader drops them like
# any other type.
EVENT_TYPES = frozenset(
    {
        "StasisStart",
        "StasisEnd",
        "ChannelDestroyed",
        "Dial",
        "ApplicationReplaced",
        "ContactStatusChange",
    }
)
_GONE = frozenset({"StasisEnd", "ChannelDestroyed"})
# dialplan context that refuses a shed call with 503 (extensions.conf)
REFUSE_CONTEXT = "botbridge-refuse"
# how long a stopping app lets calls' pending events finish before it closes the records
STOP_GRACE_SECONDS = 5.0
# drain (SIGTERM): why new calls skip the bot, and why a call still with the bot at the end
# of [bridge] drain_seconds is handed to the fallback queue
APP_DRAINING = "app_draining"
DRAIN_TIMEOUT = "drain_timeout"
DRAIN_POLL_SECONDS = 0.2
# ContactStatusChange statuses that mean a bot's SIP OPTIONS probe failed (any other status,
# Reachable, Unknown, NonQualified..., leaves the bot eligible), and the state of a health
# endpoint whose bot answers its probes (GET /endpoints)
UNREACHABLE_STATUS = "Unreachable"
ENDPOINT_ONLINE = "online"

CallEvent = tuple[CallSession, Event]


class BridgeApp:
    def __init__(
        self,
        config: Config,
        ari: CallControl,
        store: InteractionStore,
        records: RecordWriter | None = None,
        observer: SessionObserver | None = None,
    ) -> None:
        self.config = config
        self.ari = ari
        self.store = store
        # [bye_context]: set by the composition root when the feature is on
        self.bye_contexts: ByeContexts | None = None
        self.records = records or writer_for(store, config)
        self.sessions: dict[str, CallSession] = {}  # by caller channel id
        self.observer = observer  # the metrics
        self.shed: Counter[str] = Counter()  # new calls shed, by reason
        self.dispatcher: Dispatcher[CallEvent] = Dispatcher(self._handle_posted)
        self.admission = Admission(config.limits)
        self.availability = QueueAvailability(
            functools.partial(read_queue_availability, ari),
            config.bridge.availability_cache_seconds,
        )
        self._by_channel: dict[str, CallSession] = {}
        self.bots = BotPool()
        # health endpoint (pjsip.conf) -> the bot URI it probes
        self.bot_health = {name: uri for name, (uri, _) in config.bot_health_endpoints().items()}
        self.draining = False
        self.stream = event_stream(config, on_connected=self.reconcile, types=EVENT_TYPES)

    async def run(self) -> None:
        self.records.start()
        try:
            await self.stream.run(self.dispatch)
            if self.draining:
                await self._pick_up_strays()
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dispatcher.idle(), STOP_GRACE_SECONDS)
            await self.records.close()

    def stop(self) -> None:
        self.stream.stop()

    async def _pick_up_strays(self) -> None:
        """Once a draining app's socket is closed (no caller can enter it any more), a caller
        whose StasisStart came in the last moment and was never read still waits in the app:
        it goes to the fallback queue like any call during the drain."""
        try:
            channels = await self.ari.channels()
        except AriError as exc:
            log.warning("callers left in the app not looked for (%s)", exc)
            return
        reconcile.pick_up_strays(self, channels)

    async def drain(self) -> None:
        """SIGTERM: take no new call (each goes straight to the fallback queue, recorded
        ``bypassed``/``app_draining``), let the calls with the bot finish for
        ``[bridge] drain_seconds``, hand those still there to the fallback queue
        (``drain_timeout``), then stop; ``run`` flushes the records and returns."""
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.bridge.drain_seconds
        log.warning(
            "draining: new calls go to the fallback queue; %d calls in progress, up to %.0f s",
            self.active_calls,
            self.config.bridge.drain_seconds,
        )
        while self.active_calls and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        for session in [s for s in self.sessions.values() if not s.handed_off]:
            await self._fail_safe(session, DRAIN_TIMEOUT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.dispatcher.idle(), STOP_GRACE_SECONDS)
        log.warning("drained; stopping")
        self.stop()

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
        channel = event.channel
        if event.type == "ContactStatusChange":
            self._bot_health_changed(event.aor, event.contact_status)
            return None
        if event.type == "StasisStart":
            assert channel is not None
            return self._route_stasis_start(event, channel)
        if event.type == "Dial":
            peer = event.peer
            if peer is None:
                return None
            session = self._by_channel.get(peer.id)
            if session is not None and peer.id == session.bot_channel_id:
                return session
            if event.dialstatus == "ANSWER" and event.caller is not None:
                # Queue() reached an agent for a caller the app follows after the queue
                return self.sessions.get(event.caller.id)
            return None
        if event.type in _GONE and channel is not None:
            return self._by_channel.get(channel.id)
        return None

    def _route_stasis_start(self, event: Event, channel: Channel) -> CallSession | None:
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
                # Stasis(app,inbound,<availability>): the dialplan's business_hours value
                given = ",".join(args[1:]) if len(args) > 1 else None
                return self._new_session(channel, given)
            self._shed(channel, reason)
            return None
        elif args[:1] == [PROBE_ARGS]:
            return None  # reconciliation's probe channel: it hangs it up itself
        elif args[:1] == ["bot"]:
            session = self._by_channel.get(channel.id)
            if session is not None:
                return session
            log.warning("bot channel %s has no call; hanging it up", channel.name)
        else:
            log.warning("channel %s entered with unknown args %r; hanging up", channel.name, args)
        self.dispatcher.spawn(self.ari.hangup(channel.id), f"hang up {channel.name}")
        return None

    def _new_session(self, channel: Channel, availability: str | None) -> CallSession:
        dialled = channel.dialplan.exten if channel.dialplan else ""
        profile = profile_for(self.config, dialled)
        session = CallSession(
            self.ari,
            self.config,
            self.records,
            profile,
            channel,
            observer=self.observer,
            availability=self.availability,
            dialplan_availability=availability,
            bots=self.bots,
            on_bot_channel=self._index_bot_channel,
            bye_contexts=self.bye_contexts,
        )
        session.bot_channel_id = bot_channel_id_for(session.interaction_id)
        self.adopt(session)
        log.info(
            "call %s: %s from %s to %s, bot profile %s",
            session.interaction_id,
            channel.name,
            channel.caller.number if channel.caller else "?",
            dialled,
            profile.name,
            extra=call_fields(session),
        )
        return session

    def _shed(self, channel: Channel, reason: str) -> None:
        """Overload: the call skips the bot, in one piece (docs/performance.md).

        Sent to the fallback queue, it is followed like any queued call (the agent's answer
        and the end are recorded); refused, its record is closed at once."""
        self.shed[reason] += 1
        dialled = channel.dialplan.exten if channel.dialplan else ""
        profile = profile_for(self.config, dialled)
        # a draining app never refuses: its callers are not overloading anything
        draining = reason == APP_DRAINING
        refuse = self.config.limits.overload_action == "refuse" and not draining
        outcome = Outcome.BYPASSED if draining else Outcome.OVERLOADED
        session = CallSession(
            self.ari,
            self.config,
            self.records,
            profile,
            channel,
            state=CallState.ERROR if refuse else CallState.QUEUED,
            observer=self.observer,
        )
        now = time.time()
        self.records.create(
            session.interaction_id,
            profile=profile.name,
            dialled_number=dialled,
            caller_number=channel.caller.number if channel.caller else "",
            caller_channel=channel.id,
            started_at=now,
            state=session.state.value,
            outcome=outcome,
            error_reason=reason,
            queue=None if refuse else profile.fallback_queue,
            queued_at=None if refuse else now,
            ended_at=now if refuse else None,
            bot_seconds=0.0,
            billable_minutes=0.0,
            billing_rounding=self.config.billing.rounding,
        )
        if self.observer is not None:
            self.observer.outcome(outcome)
        log.warning(
            "call %s: %s shed (%s), %s",
            session.interaction_id,
            channel.name,
            reason,
            "refused" if refuse else f"to {profile.fallback_queue}",
            extra=call_fields(session),
        )
        if refuse:
            job = self.ari.continue_in_dialplan(channel.id, REFUSE_CONTEXT, "s")
        else:
            self.adopt(session)
            job = self._send_shed_call(session, reason)
        self.dispatcher.spawn(job, f"shed {channel.name}")

    async def _send_shed_call(self, session: CallSession, reason: str) -> None:
        variables = {
            VAR_INTERACTION_ID: session.interaction_id,
            VAR_OUTCOME: Outcome.BYPASSED if reason == APP_DRAINING else Outcome.OVERLOADED,
            VAR_QUEUE: session.profile.fallback_queue,
            VAR_PROFILE: session.profile.name,
            VAR_ERROR: reason,
        }
        await asyncio.gather(
            self.ari.set_vars(session.caller_id, as_channel_variables(variables)),
            session.follow_caller(),
        )
        await self.ari.continue_in_dialplan(
            session.caller_id, self.config.bridge.queue_context, "s"
        )

    # -- handling: in the call's own task ---------------------------------------------------

    async def _handle_posted(self, key: str, item: CallEvent) -> None:
        session, event = item
        bind_call(session)  # log records of this task carry the call's id and state
        try:
            await self._apply(session, event)
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
            await self._fail_safe(session, f"ari_error_{exc.status}")
        except Exception as exc:
            log.exception(
                "call %s: unexpected error handling %s", session.interaction_id, event.type
            )
            await self._fail_safe(session, f"internal_error_{type(exc).__name__}")

    async def _apply(self, session: CallSession, event: Event) -> None:
        channel = event.channel
        if event.type == "StasisStart":
            assert channel is not None
            if event.replace_channel is not None:
                await session.transfer_requested(channel)
            elif channel.id == session.caller_id:
                await session.start()
            else:
                await session.bot_entered_stasis(channel.id)
        elif event.type == "Dial":
            assert event.peer is not None
            if event.peer.id == session.bot_channel_id:
                await session.bot_dial_result(event.dialstatus or "")
            else:
                await session.agent_answered(event.peer.id)
        elif channel is not None:
            await self._channel_gone(session, event, channel)

    async def _channel_gone(self, session: CallSession, event: Event, channel: Channel) -> None:
        """StasisEnd or ChannelDestroyed of a channel of the call."""
        if channel.id == session.caller_id:
            if not session.handed_off:
                await session.caller_gone()
            if event.type == "ChannelDestroyed" or not session.followed:
                # the end of the call: the caller's ChannelDestroyed wherever it was (a
                # followed caller's events keep coming after it left Stasis), or its
                # StasisEnd when it was not followed (hung up in the app; the app gets no
                # event of the channel after that one)
                await session.caller_ended()
                self.forget(session)
        elif channel.id == session.bot_channel_id:
            if event.type == "ChannelDestroyed":
                await session.bot_destroyed(event.cause)
            else:
                await session.bot_left()
        elif event.type == "ChannelDestroyed":
            self._by_channel.pop(channel.id, None)

    async def _fail_safe(self, session: CallSession, reason: str) -> None:
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

    def _index_bot_channel(self, session: CallSession, channel_id: str) -> None:
        """A session dials its next bot on a new leg: route that leg's events to it."""
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

    async def reconcile(self, connection: int) -> None:
        """After every connect, the first included: only the wanted event types asked for,
        then sessions and this node's open records brought in line with the channels
        Asterisk has (ari_app/calls/reconcile.py)."""
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
        await reconcile.reconcile(self, connection)
