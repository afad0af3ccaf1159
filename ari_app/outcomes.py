"""What an interaction came to: the ``outcome`` of its record (docs/records.md).

Shared by the call handling that decides it, the store that checks it and the reports that
count it; nothing else is ever written to the column.
"""

from __future__ import annotations

import enum

__all__ = ["OUTCOMES", "Outcome"]


class Outcome(enum.StrEnum):
    RESOLVED = "resolved"  # the bot ended the call without transferring
    ESCALATED = "escalated"  # the bot transferred; the caller went to a queue
    BOT_FAILED = "bot_failed"  # the bot could not take the call; the fallback queue did
    ABANDONED = "abandoned"  # the caller hung up before the app handed the call on
    ERROR = "error"  # a fault; the caller went to the fallback queue (or the app restarted)
    OVERLOADED = "overloaded"  # shed by admission control: fallback queue or 503, no bot
    BYPASSED = "bypassed"  # the app was not there: the dialplan sent the caller to a queue
    # an escalation failed (the queue timed out, had no agent, was full) and no human took
    # the caller afterwards: returned to the bot and resolved, overflowed, or ended
    ESCALATION_FAILED = "escalation_failed"


OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
