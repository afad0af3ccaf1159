"""Test helpers: ``until`` (poll with a timeout instead of fixed sleeps) and wire lookups."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast, overload

from ari_app.ari import AriRest, Channel
from devtools.devstack import DevStack
from devtools.sipp import SipMessage, SippRun
from devtools.stack import free_port

DEFAULT_UNTIL_TIMEOUT = 15.0
POLL_INTERVAL = 0.1

T = TypeVar("T")


@overload
async def until(
    condition: Callable[[], Awaitable[T | None]],
    timeout: float = DEFAULT_UNTIL_TIMEOUT,
    message: str = "condition",
) -> T: ...


@overload
async def until(
    condition: Callable[[], T | None],
    timeout: float = DEFAULT_UNTIL_TIMEOUT,
    message: str = "condition",
) -> T: ...


async def until(
    condition: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    timeout: float = DEFAULT_UNTIL_TIMEOUT,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``message``.

    ``condition`` is a function or a coroutine function; what it returns once truthy is
    returned (its ``None`` is only ever "not yet").
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        last = result
        if result:
            return cast(T, result)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} ({last!r})")
        await asyncio.sleep(POLL_INTERVAL)


async def sipp_finished(run: SippRun, timeout: float) -> None:
    """Wait until a SIPp party has exited (its exit code is then ``run.wait(...)``)."""
    await until(lambda: not run.running, timeout, f"SIPp {run.name} to finish")


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


def load_callers(
    stack: DevStack,
    *,
    calls: int,
    rate: float,
    prefix: str,
    service: str = "5551000",
    timeout: float = 60,
) -> SippRun:
    """SIPp carrier placing ``calls`` calls at ``rate`` calls/s (tests/scenarios/load/caller.xml):
    caller numbers ``<prefix><call number>``, each call waits for the far end's BYE."""
    return stack.sipp().start(
        "load/caller",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=service,
        keys={"caller_prefix": prefix},
        calls=calls,
        rate=rate,
        limit=calls,
        timeout=timeout,
    )


def drop_queue(stack: DevStack, name: str) -> None:
    """Remove queue ``name`` from a running stack's rendered ``queues.conf`` and reload
    app_queue: what an Asterisk not rendered again after ``[queues]`` changed looks like
    (the app routes to a queue Asterisk does not have)."""
    path = stack.root / "etc" / "queues.conf"
    text = path.read_text()
    start = text.index(f"[{name}]\n")
    end = text.find("\n[", start + 1)
    path.write_text(text[:start] + (text[end + 1 :] if end >= 0 else ""))
    reloaded = stack.instance.cli("module reload app_queue.so").stdout
    assert "reloaded" in reloaded, reloaded


def resolving_load(
    stack: DevStack, *, calls: int, rate: float, talk_ms: int, prefix: str, timeout: float
) -> tuple[SippRun, SippRun]:
    """The bot (load/bot_resolve: answers each call, hangs up after ``talk_ms``) and the
    carrier placing ``calls`` calls at ``rate`` (``load_callers``); (callers, bot)."""
    bot = stack.sipp().start(
        "load/bot_resolve",
        local_port=stack.bot_port,
        extra=["-aa", "-d", str(talk_ms)],
        calls=calls,
        timeout=timeout,
    )
    callers = load_callers(stack, calls=calls, rate=rate, prefix=prefix, timeout=timeout)
    return callers, bot
