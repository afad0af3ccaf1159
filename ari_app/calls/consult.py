"""Warm transfer (RFC 5589 section 7): the bot consults an agent, then joins the caller to
that agent with a REFER whose Replaces names the consult call.

1. The bot calls ``[bridge] consult_user`` from its endpoint (``[botbridge-consult]``) with
   its interaction id and its context (User-to-User). :func:`consult_arrived` checks it
   against a live call of that bot (its profile has ``warm_transfer``, the call is with its
   bot, the consult comes from the profile's bot endpoint, within ``max_consults``, none
   running), else refuses it (403); the caller stays with its bot either way.
2. Accepted, the consult rings (180) in a bridge of its own, the routing map picks the queue
   from the context, and an agent leg ``Local/s@botbridge-consult-queue/n`` is made into the
   bridge and dialled: its other half runs ``Queue()`` with the agent's headers, as for a
   caller. The caller's bot leg is switched to ``PJSIP_TRANSFER_HANDLING()=ari-only`` so
   that the bot's next REFER comes to the app (``ChannelTransfer``) instead of being carried
   out by Asterisk, which in core mode joins a Replaces naming any dialog it holds.
3. The agent answers: the consult is answered (200), the bot briefs the agent.
4. The bot's REFER (:func:`refer_received`): accepted only when its Replaces names this
   call's answered consult (``refer_to.destination_channel``); then NOTIFY 200, the agent leg
   moves into the caller's bridge, the bot leg and the consult are hung up (BYE on both bot
   dialogs) and the record says ``escalated`` by ``warm_transfer``. Any other REFER while
   the consult runs is declined (NOTIFY 603): the caller stays with the bot.
5. A consult that ends without a transfer (no agent, the bot hangs it up) is let go and the
   bot leg is back in core transfer mode; the attempt stays in the record.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ari_app.ari import AriError, Channel, Event
from ari_app.calls.call import gather_all
from ari_app.calls.escalation import AttemptResult
from ari_app.calls.states import CallState, Trigger
from ari_app.calls.transfer import (
    as_channel_variables,
    caller_variables,
)
from ari_app.calls.warm import ARI_ONLY, CORE, TRANSFER_HANDLING, Consult
from ari_app.config import answering_agent
from ari_app.config.dialplan import (
    CONSULT_AGENT_ARG,
    CONSULT_QUEUE_CONTEXT,
    CONSULT_TIMEOUT_VARIABLE,
)
from ari_app.config.headers import HEADER_ARG_PREFIX
from ari_app.outcomes import Outcome

if TYPE_CHECKING:
    from ari_app.calls.session import CallSession

__all__ = [
    "Consult",
    "agent_leg_entered",
    "call_ended",
    "channel_gone",
    "consult_arrived",
    "consult_headers",
    "dial_result",
    "find_call",
    "refer_received",
    "refusal",
    "tidy",
]

log = logging.getLogger(__name__)

# transfer_progress states: NOTIFY 200 and NOTIFY 603 to the bot
TRANSFER_DONE, TRANSFER_DECLINED = "channel_answered", "channel_declined"
# what a refused consult hears: 403 Forbidden (ARI hangup reason "rejected", cause 21)
REFUSED = "rejected"
# a consult whose queue found no agent: 480 Temporarily Unavailable (cause 19)
NO_AGENT = "no_answer"
WARM_TRANSFER = "warm_transfer"
VIA_CONSULT = "consult"
# the agent leg's hangup cause -> the attempt's result: the queue half hangs up with the
# cause its QUEUESTATUS maps to (extensions.conf [botbridge-consult-queue]: TIMEOUT 19 "no
# answer", FULL 17 "busy"), which reaches the agent leg; anything else: no agent there
_RESULT_OF_CAUSE = {19: AttemptResult.TIMEOUT, 17: AttemptResult.FULL}
# seconds the agent leg's dial outlasts the queue's own timeout: the queue decides
DIAL_SLACK_SECONDS = 5


def consult_headers(args: Iterable[str]) -> dict[str, str]:
    """The consult's headers from its Stasis() arguments (``hdr.<name>=<base64 of ":" +
    value>``, extensions.conf [botbridge-consult]); absent or undecodable ones are left out."""
    headers: dict[str, str] = {}
    for arg in args:
        if not arg.startswith(HEADER_ARG_PREFIX) or "=" not in arg:
            continue
        name, encoded = arg[len(HEADER_ARG_PREFIX) :].split("=", 1)
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        if value.startswith(":") and len(value) > 1:
            headers[name] = value[1:]
    return headers


def find_call(sessions: Iterable[CallSession], headers: Mapping[str, str]) -> CallSession | None:
    """The live call a consult names with its profile's interaction header."""
    lower = {name.lower(): value for name, value in headers.items()}
    for session in sessions:
        if lower.get(session.profile.interaction_header.lower()) == session.interaction_id:
            return session
    return None


def refusal(session: CallSession, channel: Channel) -> str | None:
    """Why a consult is refused (None: taken). Pure."""
    profile = session.profile
    if not profile.warm_transfer:
        return "warm_transfer_off"
    if not channel.name.startswith(f"PJSIP/{profile.bot_endpoint}-"):
        return "not_from_bot_endpoint"
    if session.state is not CallState.BOT_CONNECTED or not session.bot_channel_id:
        return "call_not_with_bot"
    if session.consult is not None and not session.consult.ended:
        return "consult_in_progress"
    if session.consults >= profile.max_consults:
        return "max_consults"
    return None


async def consult_arrived(session: CallSession, channel: Channel, args: list[str]) -> None:
    """A consult call of the call's bot entered the app: refused, or rung and routed."""
    reason = refusal(session, channel)
    if reason is not None:
        log.warning(
            "call %s: consult %s refused (%s); the caller stays with the bot",
            session.interaction_id,
            channel.name,
            reason,
        )
        await gather_all(session.ari.hangup(channel.id, reason=REFUSED))
        return
    profile, config = session.profile, session.config
    decision = session.decided(None, consult_headers(args))
    session.consults += 1
    n = session.consults
    leg = f"consult-{session.interaction_id}-{n}"
    consult = Consult(
        channel_id=channel.id,
        agent_leg_id=leg,
        queue_half_id=f"{leg}-q",
        bridge_id=f"consult-{session.interaction_id}-{n}",
        decision=decision,
        started_at=time.time(),
    )
    session.consult = consult
    for channel_id in consult.channel_ids:
        if session.services.on_bot_channel is not None:
            session.services.on_bot_channel(session.caller_id, channel_id)
    log.info(
        "call %s: consult %s -> queue %s (escalate_to=%r, error=%s)",
        session.interaction_id,
        channel.name,
        decision.queue,
        decision.escalate_to,
        decision.error,
    )
    session.escalations.append(
        {
            "target": decision.queue,
            "via": VIA_CONSULT,
            "queued_at": consult.started_at,
            "result": None,
            "wait_seconds": None,
            "agent_answered_at": None,
        }
    )
    session.record(escalations=session.escalations_copy())
    variables = caller_variables(session.interaction_id, profile, decision, Outcome.ESCALATED)
    variables[CONSULT_TIMEOUT_VARIABLE] = str(profile.consult_timeout_seconds)
    assert session.bot_channel_id
    try:
        await gather_all(
            session.ari.ring(channel.id),
            session.ari.set_vars(session.bot_channel_id, {TRANSFER_HANDLING: ARI_ONLY}),
            session.ari.create_bridge(
                "mixing", bridge_id=consult.bridge_id, name=consult.bridge_id
            ),
        )
        await gather_all(
            session.ari.add_to_bridge(consult.bridge_id, [channel.id]),
            session.ari.create_channel(
                f"Local/s@{CONSULT_QUEUE_CONTEXT}/n",
                config.ari.app,
                app_args=f"{CONSULT_AGENT_ARG},{session.interaction_id}",
                channel_id=consult.agent_leg_id,
                other_channel_id=consult.queue_half_id,
                originator=channel.id,  # its formats (a Local channel has none of its own)
                variables=as_channel_variables(variables),
            ),
        )
    except AriError as exc:
        await _set_up_failed(session, consult, exc)


async def agent_leg_entered(session: CallSession, channel_id: str) -> None:
    """The agent leg entered the app: into the consult's bridge, the app follows it and its
    queue half (the agent's Dial), then it is dialled."""
    consult = session.consult
    if consult is None or consult.ended or channel_id != consult.agent_leg_id:
        await gather_all(session.ari.hangup(channel_id))
        return
    try:
        await gather_all(
            session.ari.add_to_bridge(consult.bridge_id, [channel_id]),
            # its end (ChannelDestroyed, with the cause) comes after it left the app
            session.ari.subscribe(
                session.config.ari.app,
                [f"channel:{channel_id}", f"channel:{consult.queue_half_id}"],
            ),
        )
        timeout = session.profile.consult_timeout_seconds + DIAL_SLACK_SECONDS
        await session.ari.dial(channel_id, timeout=timeout)
    except AriError as exc:
        await _set_up_failed(session, consult, exc)


async def _set_up_failed(session: CallSession, consult: Consult, exc: AriError) -> None:
    """A request of the consult's set-up failed: the consult ends (480), the caller stays
    with its bot. Never the call's fail-safe, which would take the caller from its bot."""
    log.warning("call %s: consult set-up failed: %s", session.interaction_id, exc)
    await _end(session, consult, AttemptResult.NO_AGENTS, "set-up failed")


async def dial_result(session: CallSession, event: Event) -> bool:
    """A Dial event of the consult's legs: the agent leg's status, or the agent Queue()
    reached from the queue half. False when the event is not the consult's."""
    consult = session.consult
    peer, caller = event.peer, event.caller
    log.debug(
        "call %s: Dial %s -> %s: %s",
        session.interaction_id,
        caller.id if caller else None,
        peer.id if peer else None,
        event.dialstatus,
    )
    if consult is None or consult.ended or peer is None:
        return False
    if caller is not None and caller.id == consult.queue_half_id:
        # Queue() reached an agent: the consult is answered (the agent leg's own Dial
        # events do not reach the app every time, Asterisk 22.10.1: measured)
        if event.dialstatus == "ANSWER":
            consult.agent_channel, consult.agent = peer.id, answering_agent(peer.name)
            await _answered(session, consult)
        return True
    if peer.id != consult.agent_leg_id:
        return False
    if event.dialstatus == "ANSWER":
        await _answered(session, consult)
    return True


async def _answered(session: CallSession, consult: Consult) -> None:
    if consult.answered_at is not None:
        return
    consult.answered_at = time.time()
    log.info("call %s: agent answered the consult", session.interaction_id)
    _close(session, AttemptResult.ANSWERED, consult.answered_at)
    await session.ari.answer(consult.channel_id)


def _close(session: CallSession, result: AttemptResult, at: float) -> None:
    """The consult's attempt (the call's open one: a call with its bot has no other) ends."""
    closed = session._close_attempt(result, at)
    if closed:
        session.record(**closed)


async def refer_received(session: CallSession, event: Event) -> None:
    """The bot's REFER on a bot leg in ari-only mode (only while a consult runs)."""
    if event.state:
        return  # the echo of the app's own transfer_progress
    consult = session.consult
    leg = event.channel.id if event.channel is not None else None
    target = event.transfer_target
    reason = None
    if consult is None or consult.ended or leg != session.bot_channel_id:
        reason = "no_consult"
    elif target is None:
        reason = "not_a_warm_transfer"  # a blind REFER (or an unknown dialog) meanwhile
    elif target.id != consult.channel_id:
        reason = "foreign_replaces"
    elif consult.answered_at is None:
        reason = "consult_not_answered"
    elif session.state is not CallState.BOT_CONNECTED:
        reason = "call_not_with_bot"
    if reason is not None or consult is None:
        log.warning(
            "call %s: REFER declined (%s; Replaces names %s); the caller stays with the bot",
            session.interaction_id,
            reason,
            target.name if target is not None else "no dialog of ours",
        )
        if leg is not None:
            await gather_all(session.ari.transfer_progress(leg, TRANSFER_DECLINED))
        return
    await _transfer(session, consult, leg)


async def _transfer(session: CallSession, consult: Consult, bot_leg: str | None) -> None:
    """The caller joins the agent of the consult; both bot dialogs end."""
    now = time.time()
    consult.transferred = True
    decision = consult.decision
    session._fire(Trigger.REFER_RECEIVED, transfer_at=now)
    session.bot_channel_id = None
    assert session.bridge_id and bot_leg
    await session.ari.transfer_progress(bot_leg, TRANSFER_DONE)
    await session.ari.add_to_bridge(session.bridge_id, [consult.agent_leg_id])
    await gather_all(
        session.ari.hangup(bot_leg),
        session.ari.hangup(consult.channel_id),
        session.ari.destroy_bridge(consult.bridge_id),
    )
    if session.escalations and session.escalations[-1]["via"] == VIA_CONSULT:
        session.escalations[-1]["via"] = WARM_TRANSFER
    session.last_decision = decision
    session.agent_answered_at = consult.answered_at
    log.info(
        "call %s: warm transfer to queue %s done (agent %s)",
        session.interaction_id,
        decision.queue,
        consult.agent,
    )
    session.record_decision(decision)
    session._fire(
        Trigger.CALLER_ROUTED,
        queue=decision.queue,
        queued_at=consult.started_at,
        agent_answered_at=consult.answered_at,
        agent_channel=consult.agent_channel,
        agent=consult.agent,
        escalations=session.escalations_copy(),
    )
    if session.services.observer is not None:
        session.services.observer.agent_answered(decision.queue, consult.agent or "(unknown)")


async def channel_gone(session: CallSession, channel_id: str, event: Event) -> bool:
    """StasisEnd or ChannelDestroyed of a consult's channel. False: not the consult's. The
    end of the agent side is read from the first ChannelDestroyed of its halves, which has
    the hangup cause (the queue half's, which the app follows, comes first)."""
    cause = event.cause if event.type == "ChannelDestroyed" else None
    consult = session.consult
    if consult is None or channel_id not in consult.channel_ids:
        return False
    if consult.transferred:
        if channel_id == consult.agent_leg_id:
            # the agent hung up: the call is over
            await gather_all(session.ari.hangup(session.caller_id))
        return True
    if not consult.ended:
        if channel_id == consult.channel_id:
            why = AttemptResult.CALLER_ABANDONED  # the bot ended its consult
            await _end(session, consult, why, "the bot ended the consult")
        elif channel_id != consult.channel_id and cause is not None:
            # the queue half's end (the app follows it), or the agent leg's, with the cause
            result = _RESULT_OF_CAUSE.get(cause or 0, AttemptResult.NO_AGENTS)
            await _end(session, consult, result, f"agent side ended, cause {cause}")
    return True


async def _end(session: CallSession, consult: Consult, result: AttemptResult, why: str) -> None:
    """The consult ended without a transfer: its channels let go, the bot leg back in core
    transfer mode; the bot still has the caller."""
    consult.ended = True
    log.info("call %s: consult ended (%s, %s)", session.interaction_id, why, result.value)
    if consult.answered_at is None:
        _close(session, result, time.time())
    steps = [
        session.ari.hangup(consult.channel_id, reason=None if consult.answered_at else NO_AGENT),
        session.ari.hangup(consult.agent_leg_id),
        session.ari.destroy_bridge(consult.bridge_id),
    ]
    if session.bot_channel_id and session.state is CallState.BOT_CONNECTED:
        steps.append(session.ari.set_vars(session.bot_channel_id, {TRANSFER_HANDLING: CORE}))
    try:
        await gather_all(*steps)
    except AriError as exc:
        log.info("call %s: consult clean-up: %s", session.interaction_id, exc)


async def tidy(session: CallSession) -> None:
    """A call that left its bot otherwise (the caller hung up, max_bot_seconds, a fault)
    while a consult ran: the consult is let go."""
    consult = session.consult
    if consult is None or consult.ended or consult.transferred:
        return
    if session.state is not CallState.BOT_CONNECTED:
        await _end(session, consult, AttemptResult.CALLER_ABANDONED, "the call left its bot")


async def call_ended(session: CallSession) -> None:
    """The caller of a warm-transferred call is gone: the agent leg is let go."""
    consult = session.consult
    if consult is not None and consult.transferred:
        await gather_all(session.ari.hangup(consult.agent_leg_id), session._destroy_bridge())
