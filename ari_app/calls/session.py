"""One call's life: caller -> bot -> (resolved | escalated to a queue | bot failed | abandoned).

The session carries out a call's effects: it fires the triggers of the state table
(ari_app/calls/states.py) with what happened on the call, sends the ARI requests of each
step (independent ones together), and queues its record changes for the record writer.
``BridgeApp`` (ari_app/calls/app.py) calls its methods from the call's own task, one event
at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ari_app.ari import AriBadRequest, AriError, AriNotFound, AriUnprocessable, Bridge, Channel
from ari_app.calls import billing
from ari_app.calls.bots import BotPool
from ari_app.calls.bye_context import ByeContexts
from ari_app.calls.control import CallControl
from ari_app.calls.states import (
    IN_PROGRESS,
    CallState,
    Trigger,
    bot_part_ends,
    entry_outcome,
    next_state,
)
from ari_app.calls.transfer import (
    REFER_UUI_HEADERS,
    VAR_INTERACTION_ID,
    VAR_OUTCOME,
    TransferDecision,
    as_channel_variables,
    caller_variables,
    decide_transfer,
)
from ari_app.config import BotProfile, BotTarget, Config
from ari_app.outcomes import Outcome
from ari_app.sip import uui
from ari_app.store import StoreError

log = logging.getLogger(__name__)

AVAILABILITY_AVAILABLE = "available"
AVAILABILITY_BUSY = "busy"
AVAILABILITY_CLOSED = "closed"
# the bot's TRANSFER_CONTEXT when its REFER is to be declined (an empty dialplan context)
DECLINED_TRANSFER_CONTEXT = "botbridge-transfer-declined"


# Q.850 hangup cause -> the Dial status Asterisk reports for it (lower case)
_CAUSE_DIALSTATUS = {
    1: "chanunavail",
    3: "chanunavail",
    17: "busy",
    18: "noanswer",
    19: "noanswer",
    20: "chanunavail",
    27: "chanunavail",
}


def dialstatus_for_cause(cause: int | None) -> str:
    return _CAUSE_DIALSTATUS.get(cause or 0, "congestion")


def availability_from_queue(logged_in: int, ready: int) -> str:
    """business_hours value derived from the live state of a queue's members."""
    if ready > 0:
        return AVAILABILITY_AVAILABLE
    if logged_in > 0:
        return AVAILABILITY_BUSY
    return AVAILABILITY_CLOSED


class SessionObserver(Protocol):
    """Told of call milestones (the app's metrics); called synchronously, must not block."""

    def outcome(self, outcome: str) -> None: ...

    def transfer_handled(self, seconds: float) -> None: ...


class RecordSink(Protocol):
    """Where a session's record changes go without waiting (ari_app/store/writer.py)."""

    def create(self, interaction_id: str, **fields: Any) -> None: ...

    def update(self, interaction_id: str, **fields: Any) -> None: ...


class AvailabilitySource(Protocol):
    async def get(self, queue: str, channel_id: str) -> str: ...


# Separates the values of one EVAL() read of the REFER's data. A bot can put any byte in
# its Refer-To, this one included: a read that does not split into the expected number of
# parts is redone one variable at a time.
_EVAL_SEPARATOR = "\x1e"
_REFER_FIELDS = (
    "HASH(TRANSFER_DATA,Refer-To)",
    "HASHKEYS(TRANSFER_DATA)",
    *(f"HASH(TRANSFER_DATA,{h})" for h in REFER_UUI_HEADERS),
)


# every bot was unreachable or at its limits: the call went to the fallback queue undialled
NO_BOT_AVAILABLE = "bot_unavailable"
# a next bot is dialled only while at least this much of the answer timeout is left (ARI's
# dial timeout counts whole seconds)
MIN_ATTEMPT_SECONDS = 1.0
BOT_ANSWERED_RESULT = "answered"


# what Asterisk answers an addChannel naming a channel that is gone or no longer in the
# app: "Channel not found" (400), 404, "Channel not in Stasis application" (422)
_CHANNEL_LEFT = (AriBadRequest, AriNotFound, AriUnprocessable)


def bot_channel_id_for(interaction_id: str, attempt: int = 1) -> str:
    """``bot-<iid>`` for the first bot dialled, ``bot-<iid>-<n>`` for the n-th."""
    return f"bot-{interaction_id}" if attempt == 1 else f"bot-{interaction_id}-{attempt}"


def bridge_id_for(interaction_id: str) -> str:
    return f"call-{interaction_id}"


@dataclass(eq=False)
class CallSession:
    """State of one interaction, keyed by the caller's channel.

    Record changes go to ``records`` without waiting; the ARI requests of one step that do
    not depend on each other are sent concurrently.
    """

    ari: CallControl
    config: Config
    records: RecordSink
    profile: BotProfile
    caller: Channel
    interaction_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: CallState = CallState.STARTED
    bot_channel_id: str | None = None
    bridge_id: str | None = None
    started_at: float = field(default_factory=time.time)
    observer: SessionObserver | None = None
    bot_answered_at: float | None = None
    agent_answered_at: float | None = None
    ended_at: float | None = None
    availability: AvailabilitySource | None = None
    # business_hours as the dialplan passed it in Stasis(app,inbound,<value>); None when the
    # dialplan passed nothing (then the variable is read from the channel)
    dialplan_availability: str | None = None
    # the app's bots (health, limits; ari_app/calls/bots.py); None: this call's own pool
    bots: BotPool | None = None
    # told of each new bot leg id before it is created (the app routes its events by it)
    on_bot_channel: Callable[[CallSession, str], None] | None = None
    bot_target: BotTarget | None = None  # the bot being dialled or talking (claimed)
    _plan: tuple[BotTarget, ...] = ()
    _plan_next: int = 0
    _attempt: int = 0
    _attempts: list[dict[str, str | None]] = field(default_factory=list)
    _bot_deadline: float = 0.0
    _bot_variables: dict[str, str] = field(default_factory=dict)
    _caller_bridged: bool = False  # the caller is in the call's bridge (a bot leg joins it)
    # the app subscribed to the caller: its events keep coming once it has left Stasis
    followed: bool = False
    # the channels of this call the app's index points at (caller, bot, transfer channel)
    channel_ids: set[str] = field(default_factory=set)
    # [bye_context]: the HEP copies of BYEs, and the bot dialog's Call-ID to look them up by
    bye_contexts: ByeContexts | None = None
    bot_call_id: str | None = None

    @property
    def caller_id(self) -> str:
        return self.caller.id

    @property
    def handed_off(self) -> bool:
        """The app's part is over (queued, resolved, abandoned, error): it only watches."""
        return self.state not in IN_PROGRESS

    # -- transitions -------------------------------------------------------------------

    def _fire(self, trigger: Trigger, **record: Any) -> None:
        """Move the call (states.TRANSITIONS) and queue the record change with the entry
        and exit actions of the move: the new state, the outcome it decides, the end of the
        bot's part (its time, billed), the end of an abandoned call."""
        previous = self.state
        self.state = new = next_state(previous, trigger)
        log.info("call %s: %s -(%s)-> %s", self.interaction_id, previous, trigger, new)
        record.setdefault("state", new.value)
        outcome = entry_outcome(previous, new)
        if outcome is not None:
            record.setdefault("outcome", outcome.value)
        if new is CallState.ABANDONED:  # every other call ends when its caller is destroyed
            self.ended_at = record.setdefault("ended_at", time.time())
        rounding = self.config.billing.rounding
        bot_part = bot_part_ends(previous, new)
        if bot_part is not None:
            self._release_claim()
        if bot_part == "charged":
            ended = record.get("transfer_at") or time.time()
            record.setdefault("bot_ended_at", ended)
            for name, value in billing.charge(self.bot_answered_at, ended, rounding).items():
                record.setdefault(name, value)
        elif bot_part == "free":
            for name, value in billing.no_charge(rounding).items():
                record.setdefault(name, value)
        self.record(**record)
        if outcome is not None and self.observer is not None:
            self.observer.outcome(outcome.value)

    def record(self, **fields: Any) -> None:
        """Queue a record change; the writer commits it off the call path."""
        try:
            self.records.update(self.interaction_id, **fields)
        except (KeyError, ValueError, StoreError):
            log.exception("call %s: record update %s refused", self.interaction_id, sorted(fields))

    # -- caller arrives ------------------------------------------------------------------

    async def start(self) -> None:
        """Record the call, then at once: create the bot leg, and the call's bridge with the
        caller in it (the dialplan already rang the caller). When the leg has entered the
        app, it joins the bridge, then the bot is dialled (``bot_entered_stasis``).

        The bot is bridged before it is dialled, so its REFER always finds the caller
        beside it, however late the app hears of the answer; and its answer crosses the
        bridge to the caller in Asterisk, which answers the caller then."""
        dialled = self.caller.dialplan.exten if self.caller.dialplan else ""
        self.records.create(
            self.interaction_id,
            profile=self.profile.name,
            dialled_number=dialled,
            caller_number=self.caller.caller.number if self.caller.caller else "",
            caller_channel=self.caller_id,
            started_at=self.started_at,
        )
        self._bot_deadline = time.monotonic() + self.profile.answer_timeout_seconds
        availability = await self._availability()
        self.bot_channel_id = self.bot_channel_id or bot_channel_id_for(self.interaction_id)
        headers = {
            "User-to-User": uui.format_uui(
                uui.encode_context([("business_hours", availability)]),
                discriminator=self.profile.uui_discriminator,
            ),
            self.profile.interaction_header: self.interaction_id,
            **self.profile.extra_headers,
        }
        variables = {f"PJSIP_HEADER(add,{name})": value for name, value in headers.items()}
        caller_number = uui.safe_value(self.caller.caller.number if self.caller.caller else "")
        if caller_number:
            variables["CALLERID(num)"] = caller_number
        if self.profile.decline_transfer_when_closed and availability == AVAILABILITY_CLOSED:
            # nobody to take the caller: a REFER gets 202 then NOTIFY 404, the bot keeps it
            variables["TRANSFER_CONTEXT"] = DECLINED_TRANSFER_CONTEXT
        self._bot_variables = variables
        if self.bots is None:
            self.bots = BotPool()
        self._plan = self.bots.plan(self.profile)
        if not self._claim_next_bot():
            self.record(availability=availability)
            await self.bot_failed(NO_BOT_AVAILABLE)
            return
        self._fire(
            Trigger.BOT_DIALLED,
            availability=availability,
            bot_channel=self.bot_channel_id,
            bots_tried=self._attempts_copy(),
        )
        created, *others = await asyncio.gather(
            self._create_bot_leg(), self._bridge_caller(), return_exceptions=True
        )
        if isinstance(created, AriError):
            await self.bot_failed(f"bot_channel_failed: {created.status}")
            return
        if isinstance(created, BaseException):
            raise created
        _raise_first(others)  # the leg's StasisStart bridges and dials it (bot_entered_stasis)

    def _claim_next_bot(self) -> bool:
        """Claim the next eligible bot of the call's plan; bots passed over (unreachable, at a
        limit) go into the attempts with why. False when none is left."""
        assert self.bots is not None
        claim = self.bots.claim(self._plan, self._plan_next)
        self._plan_next = claim.next_index
        self._attempts.extend({"uri": uri, "result": why} for uri, why in claim.skipped)
        if claim.target is None:
            return False
        self.bot_target = claim.target
        self._attempt += 1
        self._attempts.append({"uri": claim.target.uri, "result": None})
        return True

    def _attempts_copy(self) -> list[dict[str, str | None]]:
        """The attempts as they are now (the record writer encodes them later)."""
        return [dict(a) for a in self._attempts]

    def _release_claim(self) -> None:
        if self.bot_target is not None and self.bots is not None:
            self.bots.release(self.bot_target.uri)
        self.bot_target = None

    async def _create_bot_leg(self) -> None:
        """Create the claimed bot's leg (not dialled yet). It enters the app a moment later,
        on a thread of its own: requests on it before its StasisStart can answer 422."""
        assert self.bot_channel_id and self.bot_target is not None
        await self.ari.create_channel(
            self.profile.dial_string_for(self.bot_target.uri),
            self.config.ari.app,
            app_args=f"bot,{self.interaction_id}",
            channel_id=self.bot_channel_id,
            originator=self.caller_id,
            variables=self._bot_variables,
        )

    async def _bridge_caller(self) -> None:
        """The call's bridge, with the caller put in it while the bot leg is being made:
        the leg then joins alone, one channel fewer to move on the set-up's path. A caller
        that left meanwhile stays out; the leg's turn finds out (``_dial_bot``)."""
        await self._create_bridge()
        assert self.bridge_id
        try:
            await self.ari.add_to_bridge(self.bridge_id, [self.caller_id])
        except _CHANNEL_LEFT as exc:
            log.info("call %s: caller not bridged (%s)", self.interaction_id, exc)
            return
        self._caller_bridged = True

    async def _dial_bot(self) -> None:
        """Add the bot leg (and the caller, the first time) to the call's bridge, then dial
        the leg. A leg that vanished meanwhile is a failed bot."""
        assert self.bot_channel_id
        if self.bridge_id is None:  # re-adopted after a restart
            await self._create_bridge()
        assert self.bridge_id
        leg = self.bot_channel_id
        joining = [leg] if self._caller_bridged else [self.caller_id, leg]
        try:
            await self.ari.add_to_bridge(self.bridge_id, joining)
            self._caller_bridged = True
            if self.state is CallState.BOT_DIALLING and leg == self.bot_channel_id:
                # caller: the bot's INVITE carries the caller's id in From, as with Dial()
                # (left to the bridge's connected-line update, it was now and then
                # "anonymous": the INVITE went out first)
                await self.ari.dial(leg, caller=self.caller_id, timeout=self._attempt_timeout())
        except _CHANNEL_LEFT as exc:
            # "Channel not found": the caller left (its StasisEnd ends the call) or the leg
            # vanished (the bot failed: the next bot or a human takes the caller)
            log.warning("call %s: bot leg %s not dialled (%s)", self.interaction_id, leg, exc)
            try:
                await self.ari.channel(self.caller_id)
            except AriNotFound:
                return
            if leg == self.bot_channel_id:
                await self.bot_failed(f"bot_channel_failed: {exc.status}")

    def _attempt_timeout(self) -> int:
        """Dial timeout of this attempt: what is left of the answer timeout, and at most
        ``attempt_timeout_seconds`` while another bot could still be tried."""
        left = self._bot_deadline - time.monotonic() if self._bot_deadline else 0.0
        if left <= 0:
            return self.profile.answer_timeout_seconds  # re-adopted call: no budget known
        if self._plan_next < len(self._plan):
            left = min(left, self.profile.attempt_timeout_seconds)
        return max(1, round(left))

    async def _availability(self) -> str:
        """The dialplan's value (its Stasis() arguments carry it, see extensions.conf; an
        older dialplan that does not pass it is asked), else the availability queue's live
        members."""
        given = self.dialplan_availability
        if given is None:
            variable = self.config.bridge.availability_variable
            given = await self.ari.get_var(self.caller_id, variable)
        if given:
            return uui.safe_value(given)
        queue = self.profile.availability_queue
        if self.availability is not None:
            return await self.availability.get(queue, self.caller_id)
        return await read_queue_availability(self.ari, queue, self.caller_id)

    async def _create_bridge(self) -> None:
        bridge_id = bridge_id_for(self.interaction_id)
        await self.ari.create_bridge(
            "mixing", bridge_id=bridge_id, name=f"botbridge-{self.interaction_id}"
        )
        self.bridge_id = bridge_id

    # -- the bot leg ---------------------------------------------------------------------

    async def bot_entered_stasis(self, channel_id: str | None = None) -> None:
        """A bot leg entered the app (just created): bridge it with the caller, then dial it.
        A leg of a bot the call already moved on from is hung up."""
        if channel_id is not None and channel_id != self.bot_channel_id:
            await _all(self.ari.hangup(channel_id))
            return
        assert self.bot_channel_id
        if self.state is not CallState.BOT_DIALLING:
            # the caller left or the call failed before the leg was dialled
            await self._release_bot()
            return
        await self._dial_bot()

    async def bot_dial_result(self, dialstatus: str) -> None:
        """The bot leg's Dial status: ``ANSWER`` connects the bot; a failing status sends the
        caller to the next bot or a human."""
        if self.state is not CallState.BOT_DIALLING or not dialstatus:
            return
        if dialstatus == "ANSWER":
            await self._connect_bot()
        elif dialstatus not in {"RINGING", "PROGRESS", "PROCEEDING"}:
            await self.bot_failed(f"bot_{dialstatus.lower()}")

    async def _connect_bot(self) -> None:
        """The bot answered, already in the bridge with the caller: its answer crossed the
        bridge and Asterisk answered the caller (``bridge_channel.c``: an ANSWER frame
        reaching an unanswered member), as a two-party bridge passes it on. After a failed
        bot the failed leg may not have left yet; with three members the bridge mixes
        (softmix), which does not pass ANSWER on, so then the app answers the caller."""
        assert self.bot_channel_id
        if self._attempt > 1:
            await self.ari.answer(self.caller_id)
        self.bot_answered_at = time.time()
        answered: dict[str, object] = {}
        if self._attempts:
            self._attempts[-1]["result"] = BOT_ANSWERED_RESULT
            answered = {"bot_uri": self._attempts[-1]["uri"], "bots_tried": self._attempts_copy()}
        self._fire(Trigger.BOT_ANSWERED, bot_answered_at=self.bot_answered_at, **answered)
        if self.bye_contexts is not None:
            # the key of the bot's BYE copy, read while the bot channel surely exists
            self.bot_call_id = await self.ari.get_var(self.bot_channel_id, "CHANNEL(pjsip,call-id)")
            if self.bot_call_id:
                self.bye_contexts.follow(self.bot_call_id)  # let go in BridgeApp.forget

    async def bot_failed(self, reason: str) -> None:
        """The bot could not take the call: the next bot of the profile is dialled while the
        answer timeout allows, else the caller goes to the fallback queue."""
        if self.state not in {CallState.STARTED, CallState.BOT_DIALLING}:
            return
        if self._attempts and self._attempts[-1]["result"] is None:
            self._attempts[-1]["result"] = reason
        if self.state is CallState.BOT_DIALLING and await self._next_bot(reason):
            return
        tried = {"bots_tried": self._attempts_copy()} if self._attempts else {}
        self._fire(Trigger.BOT_FAILED, error_reason=reason, **tried)
        decision = TransferDecision(self.profile.fallback_queue, None, None, reason, None)
        await self.send_to_queue(decision, outcome=Outcome.BOT_FAILED)

    async def _next_bot(self, reason: str) -> bool:
        """Dial the next eligible bot on a new leg ``bot-<iid>-<n>``, the failed leg let go.
        False when no bot is left or too little of the answer timeout."""
        if self._bot_deadline - time.monotonic() < MIN_ATTEMPT_SECONDS:
            return False
        failed_leg = self.bot_channel_id
        self._release_claim()
        if not self._claim_next_bot():
            return False
        self.bot_channel_id = bot_channel_id_for(self.interaction_id, self._attempt)
        if self.on_bot_channel is not None:
            self.on_bot_channel(self, self.bot_channel_id)
        self._fire(
            Trigger.BOT_RETRIED,
            bot_channel=self.bot_channel_id,
            bots_tried=self._attempts_copy(),
        )
        steps: list[Awaitable[object]] = [self._create_bot_leg()]
        if failed_leg:
            steps.append(self.ari.hangup(failed_leg))
        created, *_ = await asyncio.gather(*steps, return_exceptions=True)
        if isinstance(created, AriError):
            await self.bot_failed(f"bot_channel_failed: {created.status}")
        elif isinstance(created, BaseException):
            raise created
        return True

    async def bot_left(self) -> None:
        """The bot leg hung up or left the app. Connected and without a transfer, the bot
        resolved the call; while dialling, its Dial status (or destruction) says why it
        failed, so nothing happens here."""
        if self.state is not CallState.BOT_CONNECTED:
            return
        await self._bot_hung_up()

    async def bot_destroyed(self, cause: int | None) -> None:
        """The bot leg is gone. While dialling, with no failing Dial status seen first, its
        hangup cause names the failure."""
        if self.state is CallState.BOT_DIALLING:
            await self.bot_failed(f"bot_{dialstatus_for_cause(cause)}")
        elif self.state is CallState.BOT_CONNECTED:
            await self._bot_hung_up()

    async def _bot_hung_up(self) -> None:
        """The connected bot hung up: resolved, unless its BYE carried escalate_to
        ([bye_context]); then the caller goes to that queue as for a REFER."""
        headers = None
        if self.bye_contexts is not None and self.bot_call_id:
            headers = await self.bye_contexts.headers_of(self.bot_call_id)
        if headers and self.state is CallState.BOT_CONNECTED:
            decision = decide_transfer(self.config, self.profile, None, headers)
            context = decision.context.as_dict() if decision.context else None
            if decision.escalate_to is not None:
                log.info(
                    "call %s: BYE with escalate_to=%r -> queue %s (error=%s)",
                    self.interaction_id,
                    decision.escalate_to,
                    decision.queue,
                    decision.error,
                )
                self._fire(Trigger.BYE_ESCALATION, transfer_at=time.time())
                self.record(
                    escalate_to=decision.escalate_to,
                    context_json=context,
                    error_reason=decision.error,
                )
                await self.send_to_queue(decision, outcome=Outcome.ESCALATED)
                return
            if context is not None:
                self.record(context_json=context)
        if self.state is CallState.BOT_CONNECTED:
            await self._resolved()

    async def _resolved(self) -> None:
        self._fire(Trigger.BOT_HUNG_UP)
        if self.profile.post_bot_context:
            await _all(
                self.ari.set_vars(
                    self.caller_id,
                    {VAR_OUTCOME: Outcome.RESOLVED, VAR_INTERACTION_ID: self.interaction_id},
                ),
                self.follow_caller(),
            )
            await self.ari.continue_in_dialplan(self.caller_id, self.profile.post_bot_context, "s")
            await self._destroy_bridge()
        else:
            await _all(self._destroy_bridge(), self.ari.hangup(self.caller_id))

    # -- the transfer back ---------------------------------------------------------------

    async def transfer_requested(self, local: Channel) -> None:
        """The bot's REFER created ``local`` (Local/<user>@botbridge-transfer;1) in our app."""
        if self.state is not CallState.BOT_CONNECTED:
            log.warning(
                "call %s: transfer in state %s; releasing %s",
                self.interaction_id,
                self.state.value,
                local.name,
            )
            await self.ari.hangup(local.id)
            return
        handling_started = time.monotonic()
        self._fire(Trigger.REFER_RECEIVED, transfer_at=time.time())
        refer_to, headers = await self._refer_data(local.id)
        decision = decide_transfer(self.config, self.profile, refer_to, headers)
        log.info(
            "call %s: REFER to %r -> queue %s (escalate_to=%r, error=%s)",
            self.interaction_id,
            decision.refer_user,
            decision.queue,
            decision.escalate_to,
            decision.error,
        )
        self.record(
            escalate_to=decision.escalate_to,
            context_json=decision.context.as_dict() if decision.context else None,
            error_reason=decision.error,
        )
        # Asterisk hangs the bot up itself once the transfer is done (core transfer mode):
        # only the transfer's Local channel is the app's to release, answered or not. The
        # bot was told the outcome before the app saw the channel (NOTIFY 200, sent as the
        # Local channel is made: the bot endpoint's refer_blind_progress = no), so its
        # release changes nothing for the bot; left alone, it would hold two channels for
        # transfer_hold_seconds.
        self.bot_channel_id = None
        release = (local.id,)
        await self.send_to_queue(decision, outcome=Outcome.ESCALATED, release=release)
        if self.observer is not None:
            self.observer.transfer_handled(time.monotonic() - handling_started)

    async def _refer_data(self, channel_id: str) -> tuple[str | None, dict[str, str]]:
        """The REFER's Refer-To and its User-to-User headers, in one round trip."""
        expression = _EVAL_SEPARATOR.join(f"${{{name}}}" for name in _REFER_FIELDS)
        joined = await self.ari.get_var(channel_id, f"EVAL({expression})")
        parts = joined.split(_EVAL_SEPARATOR) if joined is not None else []
        if len(parts) != len(_REFER_FIELDS):
            parts = [await self.ari.get_var(channel_id, name) or "" for name in _REFER_FIELDS]
        refer_to, keys, *values = parts
        read = dict(zip(REFER_UUI_HEADERS, values, strict=True))
        headers: dict[str, str] = {}
        for key in (k.strip() for k in keys.split(",")):
            if key.lower() not in {h.lower() for h in REFER_UUI_HEADERS}:
                continue
            value = read.get(key)
            if value is None:  # the bot wrote the header name in another case
                value = await self.ari.get_var(channel_id, f"HASH(TRANSFER_DATA,{key})")
            if value:
                headers[key] = value
        return refer_to or None, headers

    async def send_to_queue(
        self, decision: TransferDecision, outcome: Outcome, release: tuple[str, ...] = ()
    ) -> None:
        await self._route_caller(decision, outcome, release)
        self._fire(Trigger.CALLER_ROUTED, queue=decision.queue, queued_at=time.time())

    async def _route_caller(
        self, decision: TransferDecision, outcome: Outcome, release: tuple[str, ...] = ()
    ) -> None:
        """The caller's variables in one request, the caller into the queue context, then
        the bot leg, the bridge and ``release`` (the transfer's Local channel) let go at once.
        The app subscribes to the caller (with the variables, at once) so that its events
        keep coming once it has left Stasis: the agent's answer, the end of the call."""
        variables = caller_variables(self.interaction_id, self.profile, decision, outcome)
        await _all(
            self.ari.set_vars(self.caller_id, as_channel_variables(variables)),
            self.follow_caller(),
        )
        await self.ari.continue_in_dialplan(self.caller_id, self.config.bridge.queue_context, "s")
        await _all(
            self._destroy_bridge(),
            self._release_bot(),
            *(self.ari.hangup(channel_id) for channel_id in release),
        )

    async def fail_safe(self, reason: str) -> None:
        """An unexpected fault while the caller is ours: a human queue takes the caller."""
        if self.handed_off:
            return
        log.error(
            "call %s: %s; sending the caller to %s",
            self.interaction_id,
            reason,
            self.profile.fallback_queue,
        )
        self._fire(Trigger.FAULT, error_reason=reason, queue=self.profile.fallback_queue)
        decision = TransferDecision(self.profile.fallback_queue, None, None, reason, None)
        await self._route_caller(decision, outcome=Outcome.ERROR)

    # -- the caller leaves ---------------------------------------------------------------

    async def caller_gone(self) -> None:
        if self.handed_off:
            return
        self._fire(Trigger.CALLER_HUNG_UP)
        await _all(self._release_bot(), self._destroy_bridge())

    async def agent_answered(self, agent_channel: str | None) -> None:
        """After the queue: Queue() connected an agent (its Dial ANSWER; after a restart,
        the caller found in a bridge that is not ours). The first answer counts."""
        if self.state not in {CallState.QUEUED, CallState.ERROR} or self.agent_answered_at:
            return
        self.agent_answered_at = time.time()
        log.info("call %s: agent answered (%s)", self.interaction_id, agent_channel)
        self.record(agent_answered_at=self.agent_answered_at, agent_channel=agent_channel)

    async def caller_entered_bridge(self, bridge: Bridge) -> None:
        if bridge.id != bridge_id_for(self.interaction_id):
            agents = [c for c in bridge.channels if c != self.caller_id]
            await self.agent_answered(agents[0] if agents else None)

    async def caller_ended(self) -> None:
        """The caller's channel is destroyed: the interaction is over."""
        if not self.handed_off:
            await self.caller_gone()
        if self.ended_at is None:
            self.ended_at = time.time()
            self.record(ended_at=self.ended_at)

    async def follow_caller(self) -> bool:
        """Keep receiving the caller's events once it leaves Stasis (queue, post-bot
        context): the agent's Dial ANSWER and the caller's ChannelDestroyed (the end).
        False when Asterisk refused (the caller's channel is gone)."""
        try:
            await self.ari.subscribe(self.config.ari.app, f"channel:{self.caller_id}")
        except AriError as exc:
            log.warning("call %s: cannot follow the caller: %s", self.interaction_id, exc)
            return False
        self.followed = True
        return True

    async def _release_bot(self) -> None:
        if self.bot_channel_id:
            await self.ari.hangup(self.bot_channel_id)

    async def _destroy_bridge(self) -> None:
        if self.bridge_id:
            bridge_id, self.bridge_id = self.bridge_id, None
            await self.ari.destroy_bridge(bridge_id)


async def read_queue_availability(ari: CallControl, queue: str, channel_id: str) -> str:
    """business_hours from a queue's live members, in one round trip (queue names are
    validated config, never call data)."""
    value = await ari.get_var(
        channel_id, f"EVAL(${{QUEUE_MEMBER({queue},logged)}},${{QUEUE_MEMBER({queue},ready)}})"
    )
    logged, _, ready = (value or "").partition(",")
    return availability_from_queue(_int(logged), _int(ready))


async def _all(*steps: Awaitable[object]) -> None:
    """Run independent requests concurrently; the first failure (if any) is raised after
    all have finished, so one vanished channel does not stop the others' clean-up."""
    _raise_first(await asyncio.gather(*steps, return_exceptions=True))


def _raise_first(results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, AriNotFound):
            continue  # a channel or bridge already gone is what clean-up wanted
        if isinstance(result, BaseException):
            raise result


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
