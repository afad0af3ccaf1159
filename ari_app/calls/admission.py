"""Admission control: whether a new call may be taken, decided before any work is done for it.

Above a limit of ``[limits]`` (config) a new call is shed at once and in one piece: it never
reaches the bot, and goes to the fallback queue or is refused with 503
(``overload_action``). Calls already taken are never shed and their events never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ari_app.config import Limits

__all__ = [
    "SHED_ACTIVE_CALLS",
    "SHED_CALL_RATE",
    "SHED_EVENT_BACKLOG",
    "Admission",
    "TokenBucket",
]

# reasons, as recorded in error_reason and counted in botbridge_calls_shed{reason}
SHED_ACTIVE_CALLS = "max_active_calls"
SHED_CALL_RATE = "max_new_calls_per_second"
SHED_EVENT_BACKLOG = "max_pending_events"


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        if self.peek():
            self._tokens -= 1.0
            return True
        return False

    def peek(self) -> bool:
        """Whether a token is there now (refilled, none taken)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens >= 1.0


class Admission:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        rate = limits.max_new_calls_per_second
        self._bucket = TokenBucket(rate, max(1.0, rate), clock)

    def refusal(self, active_calls: int, pending_events: int) -> str | None:
        """None when a new call may be taken, else the reason it is shed."""
        if active_calls >= self.limits.max_active_calls:
            return SHED_ACTIVE_CALLS
        if pending_events >= self.limits.max_pending_events:
            return SHED_EVENT_BACKLOG
        if not self._bucket.take():
            return SHED_CALL_RATE
        return None
