"""Escalation attempts and what follows a failed one: pure decisions, no I/O.

A caller handed to a human queue runs ``Queue()`` in ``[botbridge-queue]``; when the queue
ends without an agent the dialplan hands the caller back to the Stasis application with
``QUEUESTATUS`` (``Stasis(<app>,queue_ended,<status>)``, ari_app/asterisk/extensions.conf).
This module names the result of each attempt, decides by the profile's
``on_escalation_failure`` what follows, and builds the ``User-to-User`` context of the new
bot dialog (same hex codec as the first one, ari_app/sip/uui.py).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ari_app.config import BotProfile
from ari_app.records import EscalationAttempt as Attempt

__all__ = [
    "QUEUE_ENDED_ARG",
    "Attempt",
    "AttemptResult",
    "FailureAction",
    "attempt_closed",
    "failed_escalation_context",
    "failure_for_queue_status",
    "next_action",
    "returns_in",
]

# first Stasis() argument of a caller the queue handed back (the second is QUEUESTATUS)
QUEUE_ENDED_ARG = "queue_ended"


class AttemptResult(enum.StrEnum):
    ANSWERED = "answered"  # an agent answered
    TIMEOUT = "timeout"  # queue_timeout_seconds passed (QUEUESTATUS TIMEOUT)
    NO_AGENTS = "no_agents"  # JOINEMPTY, LEAVEEMPTY, JOINUNAVAIL, LEAVEUNAVAIL, UNKNOWN
    FULL = "full"  # the queue's maxlen was reached (FULL)
    CALLER_ABANDONED = "caller_abandoned"  # the caller hung up while it waited


# QUEUESTATUS (app_queue) -> the failure it is; any other status (CONTINUE, WITHDRAW,
# empty) is not a failure the app acts on: the call ends as the dialplan has it
_FAILURES = {
    "TIMEOUT": AttemptResult.TIMEOUT,
    "JOINEMPTY": AttemptResult.NO_AGENTS,
    "LEAVEEMPTY": AttemptResult.NO_AGENTS,
    "JOINUNAVAIL": AttemptResult.NO_AGENTS,
    "LEAVEUNAVAIL": AttemptResult.NO_AGENTS,
    # the queue does not exist (a [routing] or profile name missing from queues.conf):
    # nobody can answer there (verified: Queue() of an unknown queue returns at once)
    "UNKNOWN": AttemptResult.NO_AGENTS,
    "FULL": AttemptResult.FULL,
}


class FailureAction(enum.StrEnum):
    RETURN_TO_BOT = "return_to_bot"
    OVERFLOW = "overflow"
    HANGUP = "hangup"


def failure_for_queue_status(status: str) -> AttemptResult | None:
    return _FAILURES.get(status.strip().upper())


def attempt_closed(attempt: Attempt, result: AttemptResult, at: float) -> Attempt:
    """The attempt with its result; its wait counts from the moment the caller was queued."""
    closed = attempt.copy()
    closed["result"] = result.value
    closed["wait_seconds"] = round(max(0.0, at - attempt["queued_at"]), 3)
    if result is AttemptResult.ANSWERED:
        closed["agent_answered_at"] = at
    return closed


def returns_in(attempts: Sequence[Attempt]) -> int:
    """How many times the call went back to a bot, read from its attempts: every failed
    attempt not followed by an overflow one (a failure that ended the call ends it)."""
    failures = {
        r.value for r in (AttemptResult.TIMEOUT, AttemptResult.NO_AGENTS, AttemptResult.FULL)
    }
    return sum(
        1
        for i, attempt in enumerate(attempts)
        if attempt["result"] in failures
        and not (i + 1 < len(attempts) and attempts[i + 1]["via"] == FailureAction.OVERFLOW)
    )


def next_action(profile: BotProfile, returns: int, failed: Attempt) -> FailureAction:
    """What follows a failed attempt. ``return_to_bot`` returns the caller to a bot at most
    ``max_escalation_returns`` times, then overflows; a failure of the overflow queue itself
    ends the call (no loop)."""
    if failed["via"] == FailureAction.OVERFLOW:
        return FailureAction.HANGUP
    policy = FailureAction(profile.on_escalation_failure)
    if policy is FailureAction.RETURN_TO_BOT and returns >= profile.max_escalation_returns:
        return FailureAction.OVERFLOW
    return policy


def failed_escalation_context(
    business_hours: str, result: AttemptResult, queue: str
) -> list[tuple[str, str]]:
    """The new bot dialog's context, in this order:
    ``business_hours=<...>;escalation=failed;reason=<timeout|no_agents|full>;queue=<queue>``."""
    return [
        ("business_hours", business_hours),
        ("escalation", "failed"),
        ("reason", result.value),
        ("queue", queue),
    ]
