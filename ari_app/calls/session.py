"""One call's life: caller -> bot -> (resolved | escalated to a queue | bot failed | abandoned).

The session carries out a call's bot part: it fires the triggers of the state table
(ari_app/calls/states.py) with what happened on the call, sends the ARI requests of each
step (independent ones together), and queues its record changes for the record writer.
``BridgeApp`` (ari_app/calls/app.py) calls its methods from the call's own task, one event
at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace

from ari_app.ari import AriError, AriNotFound, Channel
from ari_app.calls.bot_leg import (
    BOT_ANSWERED_RESULT,
    MIN_ATTEMPT_SECONDS,
    NO_BOT_AVAILABLE,
    bot_leg_variables,
)
from ari_app.calls.call import CHANNEL_LEFT, Call, gather_all, raise_first
from ari_app.calls.carrier import caller_facts, copy_bot_headers, log_refused
from ari_app.calls.escalation import (
    QUEUE_ENDED_ARG,
    AttemptResult,
    FailureAction,
    failed_escalation_context,
    failure_for_queue_status,
    next_action,
)
from ari_app.calls.refer_data import read_refer
from ari_app.calls.services import bot_channel_id_for, dialstatus_for_cause, read_queue_availability
from ari_app.calls.states import CallState, Trigger
from ari_app.calls.transfer import (
    VAR_INTERACTION_ID,
    VAR_OUTCOME,
    TransferDecision,
    decide_transfer,
)
from ari_app.calls.warm import CORE, TRANSFER_HANDLING
from ari_app.outcomes import Outcome
from ari_app.records import RecordChange
from ari_app.sip import uui

__all__ = ["CallSession"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class CallSession(Call):
    """One call with its bot: the bot leg made, bridged with the caller and dialled, the
    next bot on a failure, the bot's answer, its hang-up, its escalation (REFER, or BYE
    with escalate_to). Built on :class:`~ari_app.calls.call.Call` (the state, the record,
    the caller's ways out); made the same way for a new, a shed and a re-adopted call.
    """

    # -- caller arrives ------------------------------------------------------------------

    async def start(self) -> None:
        """Record the call, then at once: create the bot leg, and the call's bridge with the
        caller in it (the dialplan already rang the caller). When the leg has entered the
        app, it joins the bridge, then the bot is dialled (``bot_entered_stasis``).

        The bot is bridged before it is dialled, so its REFER always finds the caller
        beside it, however late the app hears of the answer; and its answer crosses the
        bridge to the caller in Asterisk, which answers the caller then."""
        opening = self.opening_record()
        facts = caller_facts(
            self.carrier_args, opening, self.config.bridge.max_header_bytes, self.queue_args
        )
        log_refused(self.interaction_id, "carrier", facts.carrier.refused)
        self.caller_facts = facts
        self.route_by_verstat(facts.carrier.verstat, opening)
        self.records.create(self.interaction_id, **opening)
        self.bots.begin()
        self.availability = availability = await self._availability()
        self.bot_channel_id = self.bot_channel_id or bot_channel_id_for(self.interaction_id)
        self._bot_variables = bot_leg_variables(
            self.profile, self.interaction_id, facts, availability, consult_on=self.consult_on
        )
        if not self.bots.claim_next():
            self.record(availability=availability)
            await self.bot_failed(NO_BOT_AVAILABLE)
            return
        self._fire(
            Trigger.BOT_DIALLED,
            availability=availability,
            bot_channel=self.bot_channel_id,
            bots_tried=self.bots.tried(),
        )
        created, *others = await asyncio.gather(
            self._create_bot_leg(), self._bridge_caller(), return_exceptions=True
        )
        if isinstance(created, AriError):
            await self.bot_failed(f"bot_channel_failed: {created.status}")
            return
        if isinstance(created, BaseException):
            raise created
        raise_first(others)  # the leg's StasisStart bridges and dials it (bot_entered_stasis)

    async def resume(self, bot_uri: str | None, bot_alive: bool) -> None:
        """A call re-adopted after a restart with its bot still connected: its bot counts
        against the bot's limits again (released when the bot's part ends, as for a new
        call), and its BYE's copy is looked for again."""
        self.bots.hold(bot_uri)
        if bot_alive:
            self._arm_bot_timer()
            await self._read_bot_call_id()
            if self.consult_on and self.bot_channel_id:
                # a consult of the replaced instance is not taken over: the bot's next REFER
                # is a blind one again (calls/consult.py)
                await self.ari.set_vars(self.bot_channel_id, {TRANSFER_HANDLING: CORE})

    async def _read_bot_call_id(self) -> None:
        """[bye_context]: the key of the bot's BYE copy, read while the bot channel exists;
        the BYE copies of that dialog are kept from then on (let go in BridgeApp.forget)."""
        bye_contexts = self.services.bye_contexts
        if bye_contexts is not None and self.bot_channel_id:
            self.bot_call_id = await self.ari.get_var(self.bot_channel_id, "CHANNEL(pjsip,call-id)")
            if self.bot_call_id:
                bye_contexts.follow(self.bot_call_id)

    async def _create_bot_leg(self) -> None:
        """Create the claimed bot's leg (not dialled yet). It enters the app a moment later,
        on a thread of its own: requests on it before its StasisStart can answer 422."""
        assert self.bot_channel_id and self.bots.target is not None
        await self.ari.create_channel(
            self.profile.dial_string_for(self.bots.target.uri),
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
        except CHANNEL_LEFT as exc:
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
                await self.ari.dial(leg, caller=self.caller_id, timeout=self.bots.dial_timeout())
        except CHANNEL_LEFT as exc:
            # "Channel not found": the caller left (its StasisEnd ends the call) or the leg
            # vanished (the bot failed: the next bot or a human takes the caller)
            log.warning("call %s: bot leg %s not dialled (%s)", self.interaction_id, leg, exc)
            try:
                await self.ari.channel(self.caller_id)
            except AriNotFound:
                return
            if leg == self.bot_channel_id:
                await self.bot_failed(f"bot_channel_failed: {exc.status}")

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
        if self.services.availability is not None:
            return await self.services.availability.get(queue, self.caller_id)
        return await read_queue_availability(self.ari, queue, self.caller_id)

    # -- the bot leg ---------------------------------------------------------------------

    async def bot_entered_stasis(self, channel_id: str | None = None) -> None:
        """A bot leg entered the app (just created): bridge it with the caller, then dial it.
        A leg of a bot the call already moved on from is hung up."""
        if channel_id is not None and channel_id != self.bot_channel_id:
            await gather_all(self.ari.hangup(channel_id))
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
        if self.escalation_returns and self.bridge_id:
            # a returned caller heard the hold music until now (its own channel was answered
            # with the first bot)
            await self._hold_music(start=False)
        elif self.bots.count > 1:
            await self.ari.answer(self.caller_id)
        self.bot_answered_at = time.time()
        self.bot_dialogs += 1
        answered: RecordChange = {"bot_dialogs": self.bot_dialogs}
        if self.bot_dialogs == 1:  # the record keeps the first bot's answer
            answered["bot_answered_at"] = self.bot_answered_at
        uri = self.bots.result(BOT_ANSWERED_RESULT)
        if uri is not None:
            answered.update({"bot_uri": uri, "bots_tried": self.bots.tried()})
        self._fire(Trigger.BOT_ANSWERED, **answered)
        self._arm_bot_timer()
        await self._read_bot_call_id()

    async def bot_failed(self, reason: str) -> None:
        """The bot could not take the call: the next bot of the profile is dialled while the
        answer timeout allows, else the caller goes to the fallback queue."""
        if self.state not in {CallState.STARTED, CallState.BOT_DIALLING}:
            return
        tried = self.bots.result(reason, unless_set=True) is not None
        if self.state is CallState.BOT_DIALLING and await self._next_bot(reason):
            return
        failed: RecordChange = {"error_reason": reason}
        if tried:
            failed["bots_tried"] = self.bots.tried()
        self._fire(Trigger.BOT_FAILED, **failed)
        decision = TransferDecision(queue=self.profile.fallback_queue, error=reason)
        await self.send_to_queue(decision, outcome=Outcome.BOT_FAILED, via="bot_failed")

    async def _next_bot(self, reason: str) -> bool:
        """Dial the next eligible bot on a new leg ``bot-<iid>-<n>``, the failed leg let go.
        False when no bot is left or too little of the answer timeout."""
        if self.bots.time_left() < MIN_ATTEMPT_SECONDS:
            return False
        failed_leg = self.bot_channel_id
        self.bots.release()
        if not self.bots.claim_next():
            return False
        self.bot_channel_id = bot_channel_id_for(self.interaction_id, self.bots.count)
        if self.services.on_bot_channel is not None:
            self.services.on_bot_channel(self.caller_id, self.bot_channel_id)
        self._fire(
            Trigger.BOT_RETRIED,
            bot_channel=self.bot_channel_id,
            bots_tried=self.bots.tried(),
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
        bye_contexts = self.services.bye_contexts
        if bye_contexts is not None and self.bot_call_id:
            headers = await bye_contexts.headers_of(self.bot_call_id)
        if headers and self.state is CallState.BOT_CONNECTED:
            decision = self.decided(None, headers)
            if decision.escalate_to is not None:
                self._fire(Trigger.BYE_ESCALATION, transfer_at=time.time())
                await self._escalate("BYE", decision)
                return
            if decision.context is not None:
                self.record(context_json=decision.context.as_dict())
        if self.state is CallState.BOT_CONNECTED:
            await self._resolved()

    async def _resolved(self) -> None:
        self._fire(Trigger.BOT_HUNG_UP)
        if self.profile.post_bot_context:
            await gather_all(
                self.ari.set_vars(
                    self.caller_id,
                    {VAR_OUTCOME: Outcome.RESOLVED, VAR_INTERACTION_ID: self.interaction_id},
                ),
                self.follow_caller(),
            )
            await self.ari.continue_in_dialplan(self.caller_id, self.profile.post_bot_context, "s")
            await self._destroy_bridge()
        else:
            await gather_all(self._destroy_bridge(), self.ari.hangup(self.caller_id))

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
        refer_to, headers = await read_refer(self.ari, local.id, self.profile.bot_headers)
        decision = self.decided(refer_to, headers)
        # Asterisk hangs the bot up itself once the transfer is done (core transfer mode):
        # only the transfer's Local channel is the app's to release, answered or not. The
        # bot was told the outcome before the app saw the channel (NOTIFY 200, sent as the
        # Local channel is made: the bot endpoint's refer_blind_progress = no), so its
        # release changes nothing for the bot; left alone, it would hold two channels for
        # transfer_hold_seconds.
        self.bot_channel_id = None
        await self._escalate("REFER", decision, release=(local.id,))
        if self.services.observer is not None:
            self.services.observer.transfer_handled(time.monotonic() - handling_started)

    def decided(self, refer_to: str | None, headers: Mapping[str, str]) -> TransferDecision:
        """The bot's escalation (its REFER's Refer-To and headers, its BYE's headers, or its
        consult call's) decided, with the profile's bot_headers it carried copied (each
        refusal logged)."""
        copied, refused = copy_bot_headers(
            headers, self.profile.bot_headers, self.config.bridge.max_context_bytes
        )
        log_refused(self.interaction_id, "bot", refused)
        decided = decide_transfer(self.config, self.profile, refer_to, headers)
        return replace(decided, headers=copied)

    async def _escalate(
        self, via: str, decision: TransferDecision, release: tuple[str, ...] = ()
    ) -> None:
        """The bot escalated (its REFER, or its BYE with escalate_to; the trigger is fired):
        the bot's context and routing go into the record, the caller to the queue."""
        log.info(
            "call %s: %s (Refer-To user %r) -> queue %s (escalate_to=%r, error=%s)",
            self.interaction_id,
            via,
            decision.refer_user,
            decision.queue,
            decision.escalate_to,
            decision.error,
        )
        self.record_decision(decision)
        await self.send_to_queue(
            decision, outcome=Outcome.ESCALATED, release=release, via=via.lower()
        )

    # -- the queue ended without an agent --------------------------------------------------

    async def caller_entered(self, args: list[str]) -> None:
        """The caller's StasisStart: a new call (``inbound``), or a caller of this call back
        from its queue (``queue_ended,<QUEUESTATUS>[,queue.<name>=<figures>...]``)."""
        if args[:1] == [QUEUE_ENDED_ARG]:
            self.take_queue_figures(args[2:])
            await self.queue_ended(args[1] if len(args) > 1 else "")
        else:
            await self.start()

    async def queue_ended(self, status: str) -> None:
        """Queue() returned without an agent and the caller is back in the app
        (``Stasis(<app>,queue_ended,<QUEUESTATUS>)``): by the profile's
        ``on_escalation_failure``, a new bot dialog, the overflow queue or the end."""
        result = failure_for_queue_status(status)
        waiting = bool(self.escalations) and self.escalations[-1]["result"] is None
        if self.state is not CallState.QUEUED or result is None or not waiting:
            # not an escalation of ours waiting (a shed call, a fault's fallback queue) or a
            # status that is no failure: the call ends as the dialplan had it
            log.warning(
                "call %s: back from the queue with %r in state %s; hanging up",
                self.interaction_id,
                status,
                self.state.value,
            )
            await gather_all(self.ari.hangup(self.caller_id))
            return
        closed = self._close_attempt(result, time.time())
        failed = self.escalations[-1]
        action = next_action(self.profile, self.escalation_returns, failed)
        log.info(
            "call %s: queue %s ended (%s, %s): %s",
            self.interaction_id,
            failed["target"],
            status,
            result.value,
            action.value,
        )
        failure: RecordChange = {"outcome": Outcome.ESCALATION_FAILED.value, **closed}
        if action is not FailureAction.HANGUP:  # the hangup's state change counts it
            self.count_outcome(Outcome.ESCALATION_FAILED)
        if action is FailureAction.RETURN_TO_BOT:
            await self._return_to_bot(result, failed["target"], failure)
        elif action is FailureAction.OVERFLOW:
            last = self.last_decision or TransferDecision(queue=failed["target"])
            decision = replace(last, queue=self.profile.overflow_queue)
            await self.send_to_queue(
                decision,
                Outcome.ESCALATION_FAILED,
                via=FailureAction.OVERFLOW.value,
                record=failure,
            )
        else:
            self._fire(Trigger.ESCALATION_ENDED, **failure)
            await gather_all(self.ari.hangup(self.caller_id))

    async def _return_to_bot(
        self, result: AttemptResult, queue: str, failure: RecordChange
    ) -> None:
        """A new dialog with a bot of the profile, the same interaction id, and a context
        that says why; the caller hears the hold music in the call's bridge meanwhile."""
        self.escalation_returns += 1
        self.bots.begin()
        availability = self.availability or ""
        context = failed_escalation_context(availability, result, queue)
        self._bot_variables = bot_leg_variables(
            self.profile,
            self.interaction_id,
            self.caller_facts,
            availability,
            context,
            consult_on=self.consult_on,
        )
        claimed = self.bots.claim_next()
        if claimed:
            self.bot_channel_id = bot_channel_id_for(self.interaction_id, self.bots.count)
            if self.services.on_bot_channel is not None:
                self.services.on_bot_channel(self.caller_id, self.bot_channel_id)
            failure["bot_channel"] = self.bot_channel_id
        failure["bots_tried"] = self.bots.tried()
        self._fire(Trigger.BOT_RETURNED, **failure)
        self._caller_bridged = False
        await self._bridge_caller()
        await self._hold_music(start=True)
        if not claimed:
            await self.bot_failed(NO_BOT_AVAILABLE)
            return
        try:
            await self._create_bot_leg()
        except AriError as exc:
            await self.bot_failed(f"bot_channel_failed: {exc.status}")
