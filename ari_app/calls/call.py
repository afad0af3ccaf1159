"""A call's state, its record and the caller's ways out of the app.

:class:`Call` is what every call has, whatever its bot does: its ids and state, the record
changes it queues (each move of the state table, ari_app/calls/states.py, with its entry
and exit actions), the caller sent to a queue or followed to its end. The bot's part
(dialling, answer, failover, escalation) is :class:`~ari_app.calls.session.CallSession`'s,
built on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ari_app.ari import AriBadRequest, AriError, AriNotFound, AriUnprocessable, Bridge, Channel
from ari_app.calls.bot_leg import BotAttempts
from ari_app.calls.carrier import CallerFacts, read_queue_figures, split_inbound_args
from ari_app.calls.control import CallControl
from ari_app.calls.escalation import AttemptResult, attempt_closed
from ari_app.calls.routing import verstat_profile
from ari_app.calls.services import CallServices, RecordSink, bridge_id_for
from ari_app.calls.states import (
    IN_PROGRESS,
    CallState,
    Trigger,
    bot_part_ends,
    entry_outcome,
    next_state,
)
from ari_app.calls.transfer import TransferDecision, as_channel_variables, caller_variables
from ari_app.config import BotProfile, Config
from ari_app.outcomes import Outcome
from ari_app.records import EscalationAttempt, RecordChange, billing

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ari_app.calls.warm import Consult

__all__ = ["CHANNEL_LEFT", "Call", "gather_all", "raise_first"]

log = logging.getLogger(__name__)

# why a caller went to the fallback queue when its bot held it past max_bot_seconds
MAX_BOT_SECONDS = "max_bot_seconds"
# a max_bot_seconds timer may fire this much early (the event loop's clock is not the wall's)
TIMER_SLACK = 0.5
# what Asterisk answers an addChannel naming a channel that is gone or no longer in the
# app: "Channel not found" (400), 404, "Channel not in Stasis application" (422)
CHANNEL_LEFT = (AriBadRequest, AriNotFound, AriUnprocessable)


# the metric's label for a queue or agent the app did not see (a call adopted after a restart)
UNKNOWN = "(unknown)"


@dataclass(eq=False)
class Call:
    """State of one interaction, keyed by the caller's channel.

    What it uses comes in ``services`` (one bundle for every call of the app); the rest is
    the call's own state. The one way to make a call's session: a new call gives its
    profile and caller, a shed or re-adopted one the state it is in besides.

    Record changes go to ``services.records`` without waiting; the ARI requests of one step
    that do not depend on each other are sent concurrently.
    """

    services: CallServices
    profile: BotProfile
    caller: Channel
    interaction_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: CallState = CallState.STARTED
    bot_channel_id: str | None = None
    bridge_id: str | None = None
    started_at: float = field(default_factory=time.time)
    bot_answered_at: float | None = None
    agent_answered_at: float | None = None
    ended_at: float | None = None
    # business_hours as the dialplan passed it in Stasis(app,inbound,<value>); None when the
    # dialplan passed nothing (then the variable is read from the channel)
    dialplan_availability: str | None = None
    # the carrier's headers as the dialplan passed them (hdr.<name>=<base64>, calls/carrier.py)
    carrier_args: Mapping[str, str] = field(default_factory=dict)
    # the queues' live figures as the dialplan passed them (queue.<name>=..., calls/carrier.py)
    queue_args: Mapping[str, str] = field(default_factory=dict)
    # the caller's numbers and its carrier headers checked, once (CallSession.start)
    caller_facts: CallerFacts = field(default_factory=CallerFacts)
    # the call's bots: plan, claimed bot, attempts, answer timeout (calls/bot_leg.py)
    bots: BotAttempts = field(init=False)
    _bot_variables: dict[str, str] = field(default_factory=dict)
    _caller_bridged: bool = False  # the caller is in the call's bridge (a bot leg joins it)
    # the app subscribed to the caller: its events keep coming once it has left Stasis
    followed: bool = False
    # the channels of this call the app's index points at (caller, bot, transfer channel)
    channel_ids: set[str] = field(default_factory=set)
    # [bye_context]: the bot dialog's Call-ID, the key of its BYE's copy
    bot_call_id: str | None = None
    # business_hours as the first bot dialog was told it
    availability: str | None = None
    # every time the caller was sent to a queue, in order (the record's escalations), the
    # last routing decision (an overflow keeps its context), the returns to a bot so far
    escalations: list[EscalationAttempt] = field(default_factory=list)
    last_decision: TransferDecision | None = None
    escalation_returns: int = 0
    # answered bot dialogs, and the bot time of those that are over (billing counts them all)
    bot_dialogs: int = 0
    earlier_bot_seconds: float = 0.0
    # warm transfer (calls/consult.py): the bot's consult call now or last, consults so far
    consult: Consult | None = None
    consults: int = 0

    def __post_init__(self) -> None:
        self.bots = BotAttempts(self.services.bots, self.profile)

    @property
    def ari(self) -> CallControl:
        return self.services.ari

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def records(self) -> RecordSink:
        return self.services.records

    @property
    def consult_on(self) -> bool:
        return self.services.consult_on

    @property
    def caller_id(self) -> str:
        return self.caller.id

    @property
    def handed_off(self) -> bool:
        """The app's part is over (queued, resolved, abandoned, error): it only watches."""
        return self.state not in IN_PROGRESS

    # -- transitions -------------------------------------------------------------------

    def _fire(self, trigger: Trigger, **record: Unpack[RecordChange]) -> None:
        """Move the call (states.TRANSITIONS) and queue the record change with the entry
        and exit actions of the move: the new state, the outcome it decides, the end of the
        bot's part (its time, billed), the end of an abandoned call."""
        previous = self.state
        self.state = new = next_state(previous, trigger)
        log.info("call %s: %s -(%s)-> %s", self.interaction_id, previous, trigger, new)
        record.setdefault("state", new.value)
        outcome = entry_outcome(previous, new)
        counted = outcome
        if outcome is Outcome.RESOLVED and self.escalation_failed:
            # returned to the bot, which ended the call: the outcome stays escalation_failed
            # (counted when the queue failed)
            outcome, counted = Outcome.ESCALATION_FAILED, None
        if outcome is not None:
            record.setdefault("outcome", outcome.value)
        if new is CallState.ABANDONED:  # every other call ends when its caller is destroyed
            self.ended_at = record.setdefault("ended_at", time.time())
        rounding = self.config.billing.rounding
        bot_part = bot_part_ends(previous, new)
        if bot_part is not None:
            self.bots.release()
        earlier = self.earlier_bot_seconds
        if bot_part == "charged":
            ended = record.get("transfer_at") or time.time()
            record.setdefault("bot_ended_at", ended)
            record = {**billing.charge(self.bot_answered_at, ended, rounding, earlier), **record}
        elif bot_part == "free":
            record = {**billing.no_charge(rounding, earlier), **record}
        self.earlier_bot_seconds = record.get("bot_seconds") or earlier
        self.record(**record)
        if counted is not None:
            self.count_outcome(counted)

    def count_outcome(self, outcome: Outcome) -> None:
        """Tell the metrics an outcome was decided."""
        if self.services.observer is not None:
            self.services.observer.outcome(outcome.value)

    def record(self, **fields: Unpack[RecordChange]) -> None:
        """Queue a record change; the writer commits it off the call path. A misspelt field
        is a type error (``RecordChange``), not a change refused here at run time."""
        self.records.update(self.interaction_id, **fields)

    def record_decision(self, decision: TransferDecision) -> None:
        """The bot's escalation into the record: its target, context, error and headers."""
        self.record(
            escalate_to=decision.escalate_to,
            context_json=decision.context.as_dict() if decision.context else None,
            error_reason=decision.error,
            bot_headers=dict(decision.headers) or None,
        )

    def opening_record(self) -> RecordChange:
        """The record's first fields: who called whom, through which profile, when."""
        caller = self.caller
        return {
            "profile": self.profile.name,
            "dialled_number": caller.dialplan.exten if caller.dialplan else "",
            "caller_number": caller.caller.number if caller.caller else "",
            "caller_channel": self.caller_id,
            "started_at": self.started_at,
        }

    def route_by_verstat(self, verstat: str, opening: RecordChange) -> None:
        """A failed caller verification moves a new call to the profile's
        ``on_verstat_failed`` profile before any bot is planned; the record names it."""
        routed = verstat_profile(self.config, self.profile, verstat)
        if routed is self.profile:
            return
        log.info(
            "call %s: verstat %s, profile %s -> %s",
            self.interaction_id,
            verstat,
            self.profile.name,
            routed.name,
        )
        self.profile = routed
        self.bots = BotAttempts(self.services.bots, routed)
        opening["profile"] = routed.name

    def take_queue_figures(self, args: Sequence[str]) -> None:
        """The queue figures a caller back from a failed queue brought (its Stasis()
        arguments after QUEUESTATUS): a new bot dialog is told them as they are now."""
        _, _, written = split_inbound_args(args)
        if written:
            self.caller_facts = replace(self.caller_facts, queues=read_queue_figures(written))

    def shed_record(self, outcome: Outcome, reason: str) -> RecordChange:
        """The whole record of a call shed before its bot (the app's overload or drain):
        queued to the fallback queue, or refused (state ERROR) and ended at once."""
        refused, now = self.state is CallState.ERROR, self.started_at
        return {
            **self.opening_record(),
            **billing.no_charge(self.config.billing.rounding),
            "state": self.state.value,
            "outcome": outcome,
            "error_reason": reason,
            "queue": None if refused else self.profile.fallback_queue,
            "queued_at": None if refused else now,
            "ended_at": now if refused else None,
        }

    async def _create_bridge(self) -> None:
        bridge_id = bridge_id_for(self.interaction_id, self.escalation_returns)
        await self.ari.create_bridge(
            "mixing", bridge_id=bridge_id, name=f"botbridge-{self.interaction_id}"
        )
        self.bridge_id = bridge_id

    @property
    def escalation_failed(self) -> bool:
        """An escalation of the call failed and no agent has answered since."""
        results = [a["result"] for a in self.escalations]
        failed = [r for r in results if r not in {None, AttemptResult.ANSWERED.value}]
        return bool(failed) and AttemptResult.ANSWERED.value not in results

    def escalations_copy(self) -> list[EscalationAttempt]:
        """The attempts as they are now (the record writer encodes them later)."""
        return [attempt.copy() for attempt in self.escalations]

    async def send_to_queue(
        self,
        decision: TransferDecision,
        outcome: Outcome,
        release: tuple[str, ...] = (),
        *,
        via: str,
        record: RecordChange | None = None,
    ) -> None:
        """The caller to ``decision.queue``: a new escalation attempt (``via`` says what
        sent it there: refer, bye, bot_failed, overflow)."""
        await self.route_caller(decision, outcome, release)
        queued_at = time.time()
        self.last_decision = decision
        self.escalations.append(
            {
                "target": decision.queue,
                "via": via,
                "queued_at": queued_at,
                "result": None,
                "wait_seconds": None,
                "agent_answered_at": None,
            }
        )
        change: RecordChange = {**(record or {}), "queue": decision.queue, "queued_at": queued_at}
        change["escalations"] = self.escalations_copy()
        self._fire(Trigger.CALLER_ROUTED, **change)

    def _close_attempt(self, result: AttemptResult, at: float) -> RecordChange:
        """The open attempt (the caller in its queue) ends with ``result``."""
        if not self.escalations or self.escalations[-1]["result"] is not None:
            return {}
        self.escalations[-1] = attempt_closed(self.escalations[-1], result, at)
        return {"escalations": self.escalations_copy()}

    async def route_caller(
        self, decision: TransferDecision, outcome: Outcome, release: tuple[str, ...] = ()
    ) -> None:
        """The caller's variables in one request, the caller into the queue context, then
        the bot leg, the bridge and ``release`` (the transfer's Local channel) let go at once.
        The app subscribes to the caller (with the variables, at once) so that its events
        keep coming once it has left Stasis: the agent's answer, the end of the call."""
        variables = caller_variables(self.interaction_id, self.profile, decision, outcome)
        await gather_all(
            self.ari.set_vars(self.caller_id, as_channel_variables(variables)),
            self.follow_caller(),
        )
        await self.ari.continue_in_dialplan(self.caller_id, self.config.bridge.queue_context, "s")
        await gather_all(
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
        decision = TransferDecision(queue=self.profile.fallback_queue, error=reason)
        await self.route_caller(decision, outcome=Outcome.ERROR)

    async def _hold_music(self, *, start: bool) -> None:
        """The hold music of a returned caller in the call's bridge, started while the new
        bot is dialled and stopped when it answers. Never a reason to fail the call: a
        refusal (no such class, already stopped) is logged."""
        if self.bridge_id is None:
            return
        try:
            if start:
                moh_class = self.config.bridge.hold_music_class
                await self.ari.start_bridge_moh(self.bridge_id, moh_class)
            else:
                await self.ari.stop_bridge_moh(self.bridge_id)
        except AriError as exc:
            log.warning("call %s: hold music (start=%s): %s", self.interaction_id, start, exc)

    # -- the bot's time limit (max_bot_seconds) ------------------------------------------

    def _arm_bot_timer(self) -> None:
        """The profile's max_bot_seconds, counted from the bot's answer: then the app posts
        ``bot_time_up`` to this call's events."""
        limit, time_up = self.profile.max_bot_seconds, self.services.on_bot_time_up
        if limit and time_up is not None and self.bot_answered_at is not None:
            left = max(0.0, self.bot_answered_at + limit - time.time())
            asyncio.get_running_loop().call_later(left, time_up, self.caller_id)

    async def bot_time_up(self) -> None:
        """max_bot_seconds passed since the bot answered: the bot is hung up and the caller
        goes to the fallback queue (outcome bot_failed, error_reason max_bot_seconds). A
        call that moved on meanwhile is left alone."""
        if self.state is not CallState.BOT_CONNECTED or self.bot_answered_at is None:
            return
        if time.time() - self.bot_answered_at < self.profile.max_bot_seconds - TIMER_SLACK:
            return  # a bot answered again since (a return to the bot): its own timer runs
        log.info("call %s: the bot held the caller too long", self.interaction_id)
        self._fire(Trigger.BOT_TIME_UP, error_reason=MAX_BOT_SECONDS)
        decision = TransferDecision(queue=self.profile.fallback_queue, error=MAX_BOT_SECONDS)
        await self.send_to_queue(decision, outcome=Outcome.BOT_FAILED, via=MAX_BOT_SECONDS)

    # -- the caller leaves ---------------------------------------------------------------

    async def caller_gone(self) -> None:
        if self.handed_off:
            return
        self._fire(Trigger.CALLER_HUNG_UP)
        await gather_all(self._release_bot(), self._destroy_bridge())

    async def agent_answered(self, agent_channel: str | None, agent: str | None = None) -> None:
        """After the queue: Queue() connected an agent (its Dial ANSWER; after a restart,
        the caller found in a bridge that is not ours). The first answer counts."""
        if self.state not in {CallState.QUEUED, CallState.ERROR} or self.agent_answered_at:
            return
        self.agent_answered_at = time.time()
        log.info("call %s: agent answered (%s)", self.interaction_id, agent_channel)
        failed_before = self.escalation_failed
        answered = self._close_attempt(AttemptResult.ANSWERED, self.agent_answered_at)
        answered["agent_answered_at"] = self.agent_answered_at
        answered["agent_channel"] = agent_channel
        answered["agent"] = agent
        if failed_before:  # a human took the caller after all
            answered["outcome"] = Outcome.ESCALATED.value
        self.record(**answered)
        if self.services.observer is not None:
            queue = self.escalations[-1]["target"] if self.escalations else UNKNOWN
            self.services.observer.agent_answered(queue, agent or UNKNOWN)

    async def caller_entered_bridge(self, bridge: Bridge) -> None:
        if not bridge.id.startswith(bridge_id_for(self.interaction_id)):
            agents = [c for c in bridge.channels if c != self.caller_id]
            await self.agent_answered(agents[0] if agents else None)

    async def caller_ended(self) -> None:
        """The caller's channel is destroyed: the interaction is over."""
        if not self.handed_off:
            await self.caller_gone()
        if self.ended_at is None:
            self.ended_at = time.time()
            ended: RecordChange = {}
            if self.state is CallState.QUEUED:  # hung up while it waited for an agent
                ended = self._close_attempt(AttemptResult.CALLER_ABANDONED, self.ended_at)
            ended["ended_at"] = self.ended_at
            self.record(**ended)

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


async def gather_all(*steps: Awaitable[object]) -> None:
    """Run independent requests concurrently; the first failure (if any) is raised after
    all have finished, so one vanished channel does not stop the others' clean-up."""
    raise_first(await asyncio.gather(*steps, return_exceptions=True))


def raise_first(results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, AriNotFound):
            continue  # a channel or bridge already gone is what clean-up wanted
        if isinstance(result, BaseException):
            raise result
