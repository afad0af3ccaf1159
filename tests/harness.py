"""Test helpers: ``until`` (poll with a timeout instead of fixed sleeps) and wire lookups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ari_app.ari import AriRest, Channel
from devtools.sipp import SipMessage, SippRun

DEFAULT_UNTIL_TIMEOUT = 15.0
POLL_INTERVAL = 0.1

T = TypeVar("T")


async def until(
    condition: Callable[[], Awaitable[T]] | Callable[[], T],
    timeout: float = DEFAULT_UNTIL_TIMEOUT,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``message``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        last = result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} ({last!r})")
        await asyncio.sleep(POLL_INTERVAL)


def first(
    run: SippRun,
    *,
    method: str | None = None,
    status: int | None = None,
    direction: str | None = None,
    cseq: str | None = None,
) -> SipMessage:
    """The first message in a SIPp party's trace that matches; fails with the trace."""
    for msg in run.messages():
        if method is not None and msg.method != method:
            continue
        if status is not None and msg.status != status:
            continue
        if direction is not None and msg.direction != direction:
            continue
        if cseq is not None and msg.cseq_method != cseq:
            continue
        return msg
    raise AssertionError(f"no {method or status} ({direction or 'any'}) in:\n{run.report()}")


def all_of(run: SippRun, method: str) -> list[SipMessage]:
    return [m for m in run.messages() if m.method == method]


async def queued_caller(ari: AriRest) -> Channel | None:
    """The carrier-side caller once it runs Queue(), or None."""
    for channel in await ari.channels():
        if channel.name.startswith("PJSIP/carrier") and channel.dialplan.app_name == "Queue":
            return channel
    return None
