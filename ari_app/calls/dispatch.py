"""Per-call event dispatch: events of one call in order, calls concurrent with each other.

The ARI reader routes each event to a call (a key) and posts it here without waiting. Each
call with pending events has one task that handles them one at a time, in arrival order;
when its queue is empty the task ends, so an idle call costs a dictionary entry, not a task.
A slow call (a slow REST reply, a slow fail-safe) therefore delays only itself.

The dispatcher also runs the short jobs that belong to no call (hanging up a channel that is
nobody's, shedding a new call) and counts what is pending, which the admission control in
``ari_app/calls/admission.py`` reads to shed new calls when the app falls behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["SLOW_EVENT_SECONDS", "Dispatcher"]

log = logging.getLogger(__name__)

# Handling one event of one call normally takes a few REST round trips on loopback (ms);
# slower than this is logged, since this call's next events wait behind it.
SLOW_EVENT_SECONDS = 2.0

E = TypeVar("E")


class _Mailbox(Generic[E]):
    __slots__ = ("events", "task")

    def __init__(self) -> None:
        self.events: deque[E] = deque()
        self.task: asyncio.Task[None] | None = None


class Dispatcher(Generic[E]):
    """Ordered per key, concurrent across keys; ``handle(key, event)`` must not raise."""

    def __init__(self, handle: Callable[[str, E], Awaitable[None]]) -> None:
        self._handle = handle
        self._mailboxes: dict[str, _Mailbox[E]] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self.pending = 0  # events posted and not yet handled, over all keys
        self.handled = 0

    def post(self, key: str, event: E) -> None:
        """Queue ``event`` for ``key``; never waits."""
        box = self._mailboxes.get(key)
        if box is None:
            box = self._mailboxes[key] = _Mailbox()
        box.events.append(event)
        self.pending += 1
        if box.task is None:
            box.task = asyncio.get_running_loop().create_task(
                self._drain(key, box), name=f"call-{key}"
            )

    def spawn(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """Run a short job that belongs to no call; exceptions are logged."""
        task = asyncio.get_running_loop().create_task(self._guarded(job, name), name=name)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    @property
    def busy_calls(self) -> int:
        """Calls whose events are being handled or waiting right now."""
        return len(self._mailboxes)

    async def idle(self) -> None:
        """Wait until every posted event is handled and every job has finished."""
        while self._mailboxes or self._jobs:
            tasks = [b.task for b in self._mailboxes.values() if b.task] + list(self._jobs)
            if tasks:
                await asyncio.wait(tasks)
            else:  # pragma: no cover - a mailbox without a task is removed at once
                await asyncio.sleep(0)

    async def _drain(self, key: str, box: _Mailbox[E]) -> None:
        try:
            while box.events:
                event = box.events.popleft()
                started = time.monotonic()
                try:
                    await self._handle(key, event)
                except Exception:
                    log.exception("call %s: event handler failed; event skipped", key)
                finally:
                    self.pending -= 1
                    self.handled += 1
                elapsed = time.monotonic() - started
                if elapsed > SLOW_EVENT_SECONDS:
                    log.warning("call %s: handling one event took %.2f s", key, elapsed)
        finally:
            # no await between the emptiness check above and this: a post() that comes after
            # sees task None and starts a new drain
            box.task = None
            if not box.events:
                self._mailboxes.pop(key, None)

    @staticmethod
    async def _guarded(job: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await job
        except Exception:
            log.exception("%s failed", name)
