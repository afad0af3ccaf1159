"""Which bot takes a call: order, weights, health and per-bot limits (pure, no I/O).

A profile lists its bots in order (``BotProfile.targets``). For each call the app makes a
*plan* once: the first attempt is a weighted random pick among the bots that have a weight
and are eligible now; every other bot follows in list order. Then :meth:`BotPool.claim`
walks the plan from where the call is: a bot that the last SIP OPTIONS probe found
unreachable, or that is at its ``max_concurrent_calls`` or ``max_calls_per_second``, is
skipped (with the reason, for the record); the first eligible one is claimed, and counts as
active until the session releases it.

Health comes from Asterisk (its qualify of one health AOR per bot URI, see pjsip.conf and
docs/architecture.md): the app feeds :meth:`BotPool.set_reachable` from ARI events and
from one listing at every connect, so no request is ever made per call. A bot never probed
(or not yet) counts as reachable.

Counts and rate buckets are per URI, over every profile that lists it, for this process.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ari_app.calls.admission import TokenBucket
from ari_app.config import BotProfile, BotTarget

__all__ = [
    "SKIP_MAX_CALLS_PER_SECOND",
    "SKIP_MAX_CONCURRENT",
    "SKIP_UNREACHABLE",
    "BotPool",
    "Claim",
]

# why a bot was passed over, as recorded in bots_tried
SKIP_UNREACHABLE = "skipped_unreachable"
SKIP_MAX_CONCURRENT = "skipped_max_concurrent_calls"
SKIP_MAX_CALLS_PER_SECOND = "skipped_max_calls_per_second"


@dataclass(frozen=True)
class Claim:
    """The outcome of one :meth:`BotPool.claim`: the bot to dial (None: none left), where
    the plan continues, and the bots passed over with why."""

    target: BotTarget | None
    next_index: int
    skipped: tuple[tuple[str, str], ...]


class BotPool:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._unreachable: set[str] = set()
        self._buckets: dict[tuple[str, float], TokenBucket] = {}
        self.active: Counter[str] = Counter()

    # -- health ------------------------------------------------------------------------------

    def set_reachable(self, uri: str, reachable: bool) -> None:
        if reachable:
            self._unreachable.discard(uri)
        else:
            self._unreachable.add(uri)

    def reachable(self, uri: str) -> bool:
        return uri not in self._unreachable

    # -- a call's bots -----------------------------------------------------------------------

    def plan(self, profile: BotProfile) -> tuple[BotTarget, ...]:
        """The order in which a new call tries the profile's bots.

        One bot: just it (no random draw). Several: the first is drawn by weight among the
        weighted bots that are eligible now (none eligible or none weighted: list order),
        the others follow in list order.
        """
        targets = profile.targets
        if len(targets) == 1:
            return targets
        weighted = [t for t in targets if t.weight > 0 and self._refusal(t, take=False) is None]
        if not weighted:
            return targets
        first = self._rng.choices(weighted, weights=[t.weight for t in weighted])[0]
        return (first, *(t for t in targets if t is not first))

    def claim(self, plan: Sequence[BotTarget], start: int = 0) -> Claim:
        """The first eligible bot of ``plan`` from ``start`` on, now counted as active."""
        skipped: list[tuple[str, str]] = []
        for index in range(start, len(plan)):
            target = plan[index]
            refusal = self._refusal(target, take=True)
            if refusal is None:
                self.active[target.uri] += 1
                return Claim(target, index + 1, tuple(skipped))
            skipped.append((target.uri, refusal))
        return Claim(None, len(plan), tuple(skipped))

    def hold(self, uri: str) -> None:
        """Count a call already talking to ``uri`` (re-adopted after a restart) as active;
        no limit applies, the call is there."""
        self.active[uri] += 1

    def release(self, uri: str) -> None:
        """The call's part with this bot is over (failed, ended, transferred)."""
        if self.active[uri] > 1:
            self.active[uri] -= 1
        else:
            self.active.pop(uri, None)

    def active_by_uri(self, uris: Sequence[str]) -> Mapping[str, int]:
        """Active calls of each of ``uris`` (0 for an idle one), for the metrics."""
        return {uri: self.active.get(uri, 0) for uri in uris}

    def _refusal(self, target: BotTarget, *, take: bool) -> str | None:
        if target.uri in self._unreachable:
            return SKIP_UNREACHABLE
        if target.max_concurrent_calls and self.active[target.uri] >= target.max_concurrent_calls:
            return SKIP_MAX_CONCURRENT
        if target.max_calls_per_second:
            bucket = self._bucket(target)
            if not (bucket.take() if take else bucket.peek()):
                return SKIP_MAX_CALLS_PER_SECOND
        return None

    def _bucket(self, target: BotTarget) -> TokenBucket:
        key = (target.uri, target.max_calls_per_second)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = target.max_calls_per_second
            bucket = self._buckets[key] = TokenBucket(rate, max(1.0, rate), self._clock)
        return bucket
