"""Live queue availability, cached per queue for a short time.

When the dialplan gives no business_hours value, a call's value comes from the live state of
its profile's availability queue (``QUEUE_MEMBER(queue,logged|ready)``). Read per call, that
is one more round trip on every call's set-up; cached per queue for
``[bridge] availability_cache_seconds`` it is one read per queue per period, shared by all
calls arriving meanwhile (concurrent misses wait for the same read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["QueueAvailability"]

Reader = Callable[[str, str], Awaitable[str]]


class QueueAvailability:
    def __init__(
        self, read: Reader, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``read(queue, channel_id)`` asks Asterisk; ``ttl`` 0 reads for every call."""
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self.reads = 0

    async def get(self, queue: str, channel_id: str) -> str:
        hit = self._cache.get(queue)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        inflight = self._inflight.get(queue)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[queue] = future
        try:
            self.reads += 1
            value = await self._read(queue, channel_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) get it, no "never retrieved"
            raise
        finally:
            self._inflight.pop(queue, None)
        self._cache[queue] = (self._clock(), value)
        future.set_result(value)
        return value
