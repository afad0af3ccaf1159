"""Reconnect delays for the ARI event socket: capped exponential backoff with jitter.

Kept pure (randomness is injectable) so the sequence can be tested without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = [
    "BACKOFF_FACTOR",
    "BACKOFF_INITIAL_SECONDS",
    "BACKOFF_JITTER_FRACTION",
    "BACKOFF_MAX_SECONDS",
    "backoff_delays",
    "next_delay",
]

BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_FACTOR = 2.0
# The app must be ready again within 5 s of Asterisk coming back (its calls fail open
# meanwhile): a reconnect attempt at least every 4 s, whatever the outage's length.
BACKOFF_MAX_SECONDS = 4.0
# Up to this fraction is taken off each delay, so several bridge instances restarted together
# do not hit a recovering Asterisk in lockstep. Subtracting (rather than adding) keeps the
# cap a true upper bound.
BACKOFF_JITTER_FRACTION = 0.2


def next_delay(
    attempt: int,
    *,
    initial: float = BACKOFF_INITIAL_SECONDS,
    factor: float = BACKOFF_FACTOR,
    maximum: float = BACKOFF_MAX_SECONDS,
    jitter: float = BACKOFF_JITTER_FRACTION,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay in seconds before reconnect attempt ``attempt`` (0 for the first retry).

    ``rand`` returns a float in [0, 1); pass ``lambda: 0.0`` for the un-jittered value.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    base = min(initial, maximum)
    # Multiply step by step instead of factor ** attempt: a long outage means a large attempt
    # count, and the power overflows a float long before the loop gets expensive.
    for _ in range(attempt):
        if base >= maximum:
            break
        base = min(base * factor, maximum)
    return base * (1.0 - jitter * rand())


def backoff_delays(
    *,
    initial: float = BACKOFF_INITIAL_SECONDS,
    factor: float = BACKOFF_FACTOR,
    maximum: float = BACKOFF_MAX_SECONDS,
    jitter: float = BACKOFF_JITTER_FRACTION,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Endless sequence of delays: ``next_delay(0)``, ``next_delay(1)``, ..."""
    attempt = 0
    while True:
        yield next_delay(
            attempt, initial=initial, factor=factor, maximum=maximum, jitter=jitter, rand=rand
        )
        attempt += 1
