"""Drain: a real stop, with no successor (SIGTERM). A restart is a handover instead
(calls/handover.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from ari_app.ari import AriError, Event
from ari_app.calls import reconcile
from ari_app.calls.dispatch import Dispatcher
from ari_app.calls.session import CallSession

__all__ = ["APP_DRAINING", "DRAIN_TIMEOUT", "drain", "pick_up_strays"]

log = logging.getLogger(__name__)

# why new calls skip the bot during a drain, and why a call still with the bot at the end
# of [bridge] drain_seconds is handed to the fallback queue
APP_DRAINING = "app_draining"
DRAIN_TIMEOUT = "drain_timeout"
DRAIN_POLL_SECONDS = 0.2


class DrainingApp(reconcile.CallsHost, Protocol):
    """What a drain needs of the app (BridgeApp)."""

    draining: bool

    @property
    def dispatcher(self) -> Dispatcher[tuple[CallSession, Event]]: ...
    @property
    def active_calls(self) -> int: ...

    async def fail_safe(self, session: CallSession, reason: str) -> None: ...

    def stop(self) -> None: ...


async def drain(app: DrainingApp, grace_seconds: float) -> None:
    """Take no new call (each goes straight to the fallback queue, recorded
    ``bypassed``/``app_draining``), let the calls with the bot finish for
    ``[bridge] drain_seconds``, hand those still there to the fallback queue
    (``drain_timeout``), then stop; ``run`` flushes the records and returns."""
    if app.draining:
        return
    app.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + app.config.bridge.drain_seconds
    log.warning(
        "draining: new calls go to the fallback queue; %d calls in progress, up to %.0f s",
        app.active_calls,
        app.config.bridge.drain_seconds,
    )
    while app.active_calls and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    for session in [s for s in app.sessions.values() if not s.handed_off]:
        await app.fail_safe(session, DRAIN_TIMEOUT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.dispatcher.idle(), grace_seconds)
    log.warning("drained; stopping")
    app.stop()


async def pick_up_strays(app: DrainingApp) -> None:
    """Once a draining app's socket is closed (no caller can enter it any more), a caller
    whose StasisStart came in the last moment and was never read still waits in the app:
    it goes to the fallback queue like any call during the drain."""
    try:
        channels = await app.ari.channels()
    except AriError as exc:
        log.warning("callers left in the app not looked for (%s)", exc)
        return
    reconcile.pick_up_strays(app, channels)
