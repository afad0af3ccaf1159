"""Billable bot time: pure functions, no I/O; the one place it is computed (the call
sessions and reconciliation write it into the record, the reports read it back).

Billable time is the time the caller was connected to the bot: from ``bot_answered_at`` to
the end of the bot's part of the call (``transfer_at`` for an escalation, otherwise the
moment the bot leg or the caller went away). ``[billing] rounding`` turns those seconds into
billable minutes:

- ``ceil_minute`` (default): every started minute counts, ``ceil(s / 60)``;
- ``ceil_6s``: every started 6-second block counts, ``ceil(s / 6) / 10`` minutes;
- ``exact``: ``round(s / 60, 2)``.

Seconds are first rounded to the millisecond, so that float noise in the timestamps
(``60.0000000001``) never adds a minute. docs/records.md has the table.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from ari_app.records import Record, RecordChange

ROUNDING_CEIL_MINUTE = "ceil_minute"
ROUNDING_CEIL_6S = "ceil_6s"
ROUNDING_EXACT = "exact"
ROUNDINGS = (ROUNDING_CEIL_MINUTE, ROUNDING_CEIL_6S, ROUNDING_EXACT)
DEFAULT_ROUNDING = ROUNDING_CEIL_MINUTE


def bot_seconds(answered_at: float | None, ended_at: float | None) -> float | None:
    """Seconds connected to the bot, to the millisecond; None when either end is unknown."""
    if answered_at is None or ended_at is None:
        return None
    return round(max(0.0, ended_at - answered_at), 3)


def billable_minutes(seconds: float | None, rounding: str = DEFAULT_ROUNDING) -> float | None:
    """Billable minutes for ``seconds`` of bot time under ``rounding``; None stays None."""
    if seconds is None:
        return None
    if rounding not in ROUNDINGS:
        raise ValueError(f"billing rounding {rounding!r} is not one of {ROUNDINGS}")
    seconds = round(max(0.0, seconds), 3)
    if rounding == ROUNDING_CEIL_MINUTE:
        return float(math.ceil(seconds / 60))
    if rounding == ROUNDING_CEIL_6S:
        return math.ceil(seconds / 6) / 10
    return round(seconds / 60, 2)


def charge(
    answered_at: float | None,
    ended_at: float | None,
    rounding: str = DEFAULT_ROUNDING,
    earlier: float = 0.0,
) -> RecordChange:
    """The record's billing columns for a bot part from ``answered_at`` to ``ended_at``,
    after ``earlier`` seconds of the call's earlier bot dialogs (a caller returned to a bot
    after a failed escalation): the total is rounded, not each dialog."""
    seconds = bot_seconds(answered_at, ended_at)
    if seconds is not None:
        seconds = round(seconds + earlier, 3)
    return {
        "bot_seconds": seconds,
        "billable_minutes": billable_minutes(seconds, rounding),
        "billing_rounding": rounding,
    }


def no_charge(rounding: str = DEFAULT_ROUNDING, earlier: float = 0.0) -> RecordChange:
    """Billing columns of a bot part the bot never answered (after ``earlier`` seconds of
    the call's earlier bot dialogs)."""
    seconds = round(earlier, 3)
    return {
        "bot_seconds": seconds,
        "billable_minutes": billable_minutes(seconds, rounding),
        "billing_rounding": rounding,
    }


# -- a stored record's bot time and minutes (the reports) --------------------------------------


def record_bot_seconds(record: Record) -> float | None:
    """Seconds the caller was connected to the bot; None if unknown (no bot, still talking).

    The record's own ``bot_seconds`` wins. Otherwise: from ``bot_answered_at`` to the bot's
    transfer request (``transfer_at``) or, without one, to the end of the bot leg
    (``bot_ended_at``) or of the call (``ended_at``).
    """
    given = record.get("bot_seconds")
    if given is not None:
        return max(0.0, float(given))
    ends = (record.get("transfer_at"), record.get("bot_ended_at"), record.get("ended_at"))
    end = next((epoch_seconds(e) for e in ends if e is not None), None)
    return bot_seconds(epoch_seconds(record.get("bot_answered_at")), end)


def record_billable_minutes(record: Record) -> float:
    """The record's ``billable_minutes``, else its bot time billed under its
    ``billing_rounding`` (``ceil_minute`` when it names none); 0 without bot time."""
    given = record.get("billable_minutes")
    if given is not None:
        return max(0.0, float(given))
    rounding = record.get("billing_rounding")
    minutes = billable_minutes(
        record_bot_seconds(record) or 0.0,
        rounding if rounding is not None and rounding in ROUNDINGS else DEFAULT_ROUNDING,
    )
    return minutes or 0.0


def epoch_seconds(value: Any) -> float | None:
    """An epoch-seconds column (a float, or a datetime from an ORM store)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)
