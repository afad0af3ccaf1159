"""Billable bot time: pure functions, no I/O.

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
    answered_at: float | None, ended_at: float | None, rounding: str = DEFAULT_ROUNDING
) -> dict[str, float | str | None]:
    """The record's billing columns for a bot part from ``answered_at`` to ``ended_at``."""
    seconds = bot_seconds(answered_at, ended_at)
    return {
        "bot_seconds": seconds,
        "billable_minutes": billable_minutes(seconds, rounding),
        "billing_rounding": rounding,
    }


def no_charge(rounding: str = DEFAULT_ROUNDING) -> dict[str, float | str | None]:
    """Billing columns of a call the bot never answered."""
    return {"bot_seconds": 0.0, "billable_minutes": 0.0, "billing_rounding": rounding}
