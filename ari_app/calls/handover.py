"""Handover: a new instance takes the calls over from a running one, which lets go of them.

What Asterisk 22 does when a second WebSocket registers the application's name (docs/
decisions.md (w)): the newest client gets every event at once, the replaced one is sent
``ApplicationReplaced`` and then nothing (but may get one event that crossed the swap), and
may still act on every channel through REST. The handover rests on that and on one lock:

- Every instance holds an exclusive ``flock`` on ``<state_dir>/app.lock`` for its whole
  life (the kernel releases it at exit, even at SIGKILL).
- The successor (``ari-app run --take-over``) connects first: from then on it gets every
  event. It holds them (reading its socket all along, so Asterisk never waits on it) until
  the running instance let go, which the lock tells; then it reconciles (the records the old
  instance flushed, the channels Asterisk has) and handles the held events in order.
- The replaced instance stops taking part: on ``ApplicationReplaced`` it starts no drain and
  never reconnects; it still handles what reaches it for ``REPLACED_QUIET_SECONDS`` (the
  event that crossed the swap, and what its calls' handlers already started), lets its
  handlers finish, flushes its records and exits 0.

So every event is handled by exactly one instance, the one that owned the call when it
came, and each instance acts only on what it owns: nothing is done twice, nothing is lost.
A successor that does not get the lock within ``HANDOVER_SECONDS`` kills the holder (its
pid is in the lock file) and adopts the calls as after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import IO, Any

from ari_app.ari import Event
from ari_app.calls.app import STOP_GRACE_SECONDS, BridgeApp

__all__ = [
    "HANDOVER_SECONDS",
    "LET_GO_SECONDS",
    "LOCK_FILE",
    "REPLACED_QUIET_SECONDS",
    "HandoverApp",
    "InstanceLock",
]

log = logging.getLogger(__name__)

# the lock every instance holds, in the state directory
LOCK_FILE = "app.lock"
# how long a successor waits for the running instance to let go before it kills it; the old
# instance needs REPLACED_QUIET_SECONDS, its handlers' end (at most STOP_GRACE_SECONDS) and
# one record flush
HANDOVER_SECONDS = 30.0
# how long a replaced instance still reads its socket: the event that crossed the swap
# reaches it within microseconds of ApplicationReplaced (decisions.md (w), finding 6)
REPLACED_QUIET_SECONDS = 0.5
# how long a replaced instance takes at most to exit: its quiet time, its handlers' end, one
# record flush (bounded like a stop's)
LET_GO_SECONDS = REPLACED_QUIET_SECONDS + STOP_GRACE_SECONDS + 5.0
LOCK_POLL_SECONDS = 0.05
# after a SIGKILL the kernel releases the lock at once; this bounds the wait all the same
KILLED_RELEASE_SECONDS = 5.0


class InstanceLock:
    """An exclusive ``flock`` on one file, with the holder's pid written in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return True

    async def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the lock; whether it is held now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.try_acquire():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(LOCK_POLL_SECONDS)
        return True

    def holder(self) -> int | None:
        """The pid the holder wrote, if readable."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None


class HandoverApp(BridgeApp):
    """The bridge app that lets go of its calls when replaced and, with ``take_over``, takes
    them over from the instance it replaces."""

    def __init__(self, *args: Any, lock: InstanceLock, take_over: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lock = lock
        self.replaced = False
        # set once this instance owns the calls: at once, or after the take-over
        self.owning = asyncio.Event()
        # a take-over with no instance running (the lock is free before this one connects)
        # is a plain start: the open records, if any, are a crash's
        self.take_over = take_over and not lock.try_acquire()
        if take_over and not self.take_over:
            log.warning("no instance runs with this state directory: nothing to take over")
        self._held: list[Event] | None = [] if self.take_over else None
        self._taking_over: asyncio.Task[Any] | None = None
        self._drain_task: asyncio.Task[Any] | None = None
        if not self.take_over:
            self.owning.set()

    # -- the replaced instance ----------------------------------------------------------

    def dispatch(self, event: Event) -> None:
        if event.type == "ApplicationReplaced":
            self._let_go()
        elif self._held is not None:
            self._held.append(event)
        else:
            super().dispatch(event)

    def _let_go(self) -> None:
        if self.replaced:
            return
        self.replaced = True
        log.warning(
            "another instance registered app %s and gets its events now: letting go of %d "
            "calls (no drain, no reconnect); exiting in %.1f s once the records are written",
            self.config.ari.app,
            len(self.sessions),
            REPLACED_QUIET_SECONDS,
        )
        self.stream.stop_reconnecting()  # a connect would register the app again
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()  # its calls are the successor's now
        asyncio.get_running_loop().call_later(REPLACED_QUIET_SECONDS, self.stop)

    async def drain(self) -> None:
        """A stop while replaced: the calls are the successor's, there is nothing to drain.
        A drain under way when the successor comes is ended (``_let_go``) before it hands a
        call to the fallback queue."""
        if self.replaced:
            log.info("stop asked while replaced: the calls are the successor's; not draining")
            return
        self._drain_task = asyncio.current_task()
        await super().drain()

    # -- the successor ------------------------------------------------------------------

    async def reconcile(self, connection: int, *, handover: bool = False) -> None:
        if self._held is not None and self._taking_over is None:
            # the first connect of a take-over: the events are held (the reader keeps
            # reading) while the running instance lets go
            self._taking_over = asyncio.create_task(self._take_over(connection), name="take-over")
            return
        await self.owning.wait()
        await super().reconcile(connection, handover=handover)

    async def _take_over(self, connection: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.warning(
            "app %s registered; waiting for the running instance to let go (%s)",
            self.config.ari.app,
            self.lock.path,
        )
        handover = await self.lock.acquire(HANDOVER_SECONDS)
        if not handover:
            pid = self.lock.holder()
            log.error(
                "the running instance (pid %s) did not let go in %.0f s; killing it, its calls "
                "are adopted as after a crash",
                pid,
                HANDOVER_SECONDS,
            )
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not await self.lock.acquire(KILLED_RELEASE_SECONDS):
                log.error("%s still locked; taking the calls over all the same", self.lock.path)
        waited = loop.time() - started
        try:
            if self.bye_contexts is not None:
                await self.bye_contexts.start()  # its port was the old instance's
            await super().reconcile(connection, handover=handover)
        except Exception:
            log.exception("taking the calls over failed; handling the live events all the same")
        finally:
            held, self._held = self._held or [], None
            for event in held:
                super().dispatch(event)
            self.owning.set()
        log.warning(
            "took the calls over: waited %.2f s for the running instance, %d calls followed, "
            "%d events held meanwhile",
            waited,
            len(self.sessions),
            len(held),
        )
