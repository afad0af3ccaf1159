"""A call's life in one table: which trigger moves a call from which states to which state.

The session (ari_app/calls/session.py) fires triggers named after what happened on the call,
never after ARI event types; :func:`next_state` checks each against :data:`TRANSITIONS`.
The record effects of a move are entry/exit actions of states (:func:`entry_outcome`,
:func:`bot_part_ends`), applied by the session in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ari_app.outcomes import Outcome

__all__ = [
    "HANDED_OFF",
    "IN_PROGRESS",
    "TRANSITIONS",
    "CallState",
    "InvalidTransition",
    "Trigger",
    "bot_part_ends",
    "entry_outcome",
    "next_state",
]


class CallState(enum.StrEnum):
    STARTED = "started"  # the caller is in the app; nothing done yet
    BOT_DIALLING = "bot_dialling"  # the bot leg is created and dialled
    BOT_CONNECTED = "bot_connected"  # caller and bot talk in the call's bridge
    TRANSFERRING = "transferring"  # the bot's REFER arrived; the caller is being routed
    BOT_FAILED = "bot_failed"  # the bot could not take the call; routing to fallback
    QUEUED = "queued"  # the caller went on to a human queue (dialplan)
    RESOLVED = "resolved"  # the bot ended the call
    ABANDONED = "abandoned"  # the caller hung up while the app held the call
    ERROR = "error"  # a fault: the caller was sent to the fallback queue
    # the queue ended without an agent and the profile ends the call then (hangup)
    ESCALATION_FAILED = "escalation_failed"


class Trigger(enum.StrEnum):
    BOT_DIALLED = "bot_dialled"
    BOT_ANSWERED = "bot_answered"
    BOT_RETRIED = "bot_retried"  # this bot failed; the next bot of the profile is dialled
    BOT_FAILED = "bot_failed"
    BOT_HUNG_UP = "bot_hung_up"
    REFER_RECEIVED = "refer_received"
    BYE_ESCALATION = "bye_escalation"  # the bot hung up with escalate_to on its BYE
    CALLER_ROUTED = "caller_routed"
    # the queue ended without an agent (Stasis queue_ended): a new bot dialog, or the end
    BOT_RETURNED = "bot_returned"
    ESCALATION_ENDED = "escalation_ended"
    CALLER_HUNG_UP = "caller_hung_up"
    FAULT = "fault"
    BOT_TIME_UP = "bot_time_up"  # the profile's max_bot_seconds passed; the caller is taken


S = CallState

# The states in which the app still holds the caller; from the others the app only watches
# (the agent's answer, the end of the call) and nothing moves the call any more.
IN_PROGRESS = frozenset({S.STARTED, S.BOT_DIALLING, S.BOT_CONNECTED, S.TRANSFERRING, S.BOT_FAILED})
HANDED_OFF = frozenset(S) - IN_PROGRESS

# trigger -> (from states, to state)
TRANSITIONS: Mapping[Trigger, tuple[frozenset[CallState], CallState]] = {
    Trigger.BOT_DIALLED: (frozenset({S.STARTED}), S.BOT_DIALLING),
    Trigger.BOT_ANSWERED: (frozenset({S.BOT_DIALLING}), S.BOT_CONNECTED),
    Trigger.BOT_RETRIED: (frozenset({S.BOT_DIALLING}), S.BOT_DIALLING),
    Trigger.BOT_FAILED: (frozenset({S.STARTED, S.BOT_DIALLING}), S.BOT_FAILED),
    Trigger.BOT_TIME_UP: (frozenset({S.BOT_CONNECTED}), S.BOT_FAILED),
    Trigger.BOT_HUNG_UP: (frozenset({S.BOT_CONNECTED}), S.RESOLVED),
    Trigger.REFER_RECEIVED: (frozenset({S.BOT_CONNECTED}), S.TRANSFERRING),
    Trigger.BYE_ESCALATION: (frozenset({S.BOT_CONNECTED}), S.TRANSFERRING),
    # from QUEUED: the overflow queue after a failed escalation
    Trigger.CALLER_ROUTED: (frozenset({S.TRANSFERRING, S.BOT_FAILED, S.QUEUED}), S.QUEUED),
    Trigger.BOT_RETURNED: (frozenset({S.QUEUED}), S.BOT_DIALLING),
    Trigger.ESCALATION_ENDED: (frozenset({S.QUEUED}), S.ESCALATION_FAILED),
    Trigger.CALLER_HUNG_UP: (IN_PROGRESS, S.ABANDONED),
    Trigger.FAULT: (IN_PROGRESS, S.ERROR),
}


class InvalidTransition(RuntimeError):
    pass


def next_state(current: CallState, trigger: Trigger) -> CallState:
    sources, target = TRANSITIONS[trigger]
    if current not in sources:
        raise InvalidTransition(f"{trigger.value} is not allowed in state {current.value}")
    return target


# entry action: the outcome a state decides (QUEUED: only after a transfer; after a bot
# failure the record keeps bot_failed)
_OUTCOME_ON_ENTRY: Mapping[CallState, Outcome] = {
    S.RESOLVED: Outcome.RESOLVED,
    S.BOT_FAILED: Outcome.BOT_FAILED,
    S.ABANDONED: Outcome.ABANDONED,
    S.ERROR: Outcome.ERROR,
    S.ESCALATION_FAILED: Outcome.ESCALATION_FAILED,
}


def entry_outcome(previous: CallState, new: CallState) -> Outcome | None:
    if new is S.QUEUED and previous is S.TRANSFERRING:
        return Outcome.ESCALATED
    return _OUTCOME_ON_ENTRY.get(new)


def bot_part_ends(previous: CallState, new: CallState) -> str | None:
    """Exit action: "charged" when the move ends a connected bot's part (its time is
    billed), "free" when it ends a bot that never answered, None otherwise."""
    if previous is S.BOT_CONNECTED:
        return "charged"
    if previous in {S.STARTED, S.BOT_DIALLING} and new not in {S.BOT_DIALLING, S.BOT_CONNECTED}:
        return "free"
    return None
