"""What Asterisk 22 does when a second WebSocket registers the Stasis application's name.

The ground a handover between two app instances would stand on (docs/decisions.md, "A second
WebSocket for the same Stasis application"): the test plays three ARI clients of one app
name against a real Asterisk with no app process, and real SIPp callers. Asterisk keeps one
application object per name and swaps its handler (res/stasis/app.c, ``app_update``), so:
the newest client gets every event, of the new calls and of the calls already in the app;
the one it replaced gets ``ApplicationReplaced`` and then nothing, keeps its socket and can
still act on every channel through REST; its disconnect unregisters nothing; the newest
client's disconnect unregisters the name, and the replaced one, still connected, does not
get it back: callers fail open in the dialplan.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from ari_app.ari import Event
from ari_app.connect import event_stream
from devtools.devstack import DevStack
from tests.harness import load_callers, queued_caller, until

pytestmark = pytest.mark.integration

CALLER_TIMEOUT_SECONDS = 60
# a replaced client that got an event would have it well within this
QUIET_SECONDS = 2.0


class Client:
    """One WebSocket registering the stack's app name; records every event it is sent."""

    def __init__(self, stack: DevStack, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self.connections: list[int] = []
        self.stream = event_stream(stack.config, on_connected=self._connected)
        self._task: asyncio.Task[None] | None = None

    async def _connected(self, number: int) -> None:
        self.connections.append(number)

    def of(self, event_type: str, channel_id: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e.type == event_type and (channel_id is None or e.channel_id == channel_id)
        ]

    async def __aenter__(self) -> Client:
        self._task = asyncio.create_task(self.stream.run(self.events.append))
        await until(lambda: self.connections, 10, f"client {self.name} to connect")
        return self

    async def disconnect(self) -> None:
        self.stream.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
            self._task = None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()


def call(stack: DevStack, prefix: str) -> str:
    """Place a call that waits until the far end hangs up; returns its caller number (the
    prefix and SIPp's call number, 1)."""
    load_callers(stack, calls=1, rate=1, prefix=prefix, timeout=CALLER_TIMEOUT_SECONDS)
    return f"{prefix}1"


async def started(client: Client, number: str) -> str:
    """The id of the caller ``number``'s channel once ``client`` got its StasisStart."""

    def channel() -> str | None:
        for event in client.of("StasisStart"):
            if event.channel is not None and event.channel.caller.number == number:
                return event.channel.id
        return None

    channel_id: str = await until(channel, 15, f"StasisStart of {number} at {client.name}")
    return channel_id


async def test_the_newest_client_gets_every_event_and_the_replaced_one_none(
    asterisk: DevStack,
) -> None:
    app = asterisk.config.ari.app
    async with asterisk.rest() as ari, Client(asterisk, "A") as a:
        first = await started(a, call(asterisk, "1555003100"))
        await ari.answer(first)
        bridge = await ari.create_bridge("mixing", name="replaced")
        await ari.add_to_bridge(bridge.id, first)
        await until(lambda: a.of("ChannelEnteredBridge", first), 10, "A sees the bridge join")

        async with Client(asterisk, "B") as b:
            # A is told, on the socket it keeps; B, an inbound socket, is told nothing
            await until(lambda: a.of("ApplicationReplaced"), 10, "ApplicationReplaced at A")
            assert [e.application for e in a.of("ApplicationReplaced")] == [app]
            assert not b.of("ApplicationReplaced")
            assert [x.get("name") for x in await ari.applications()] == [app]
            replaced_at = len(a.events)

            # a new call's events go to B only
            second = await started(b, call(asterisk, "1555003101"))
            await ari.answer(second)
            # a call A took before B came: A may still act on it through REST, and the
            # events go to B, channel and bridge alike
            await ari.hangup(first)
            await until(lambda: b.of("StasisEnd", first), 10, "StasisEnd of the first at B")
            left = b.of("ChannelLeftBridge", first)[0].bridge
            assert left is not None and left.id == bridge.id
            await asyncio.sleep(QUIET_SECONDS)
            assert a.events[replaced_at:] == []
            assert a.connections == [1]  # its socket was left open, never closed by Asterisk

            # A's disconnect unregisters nothing: B keeps the app and its calls
            await a.disconnect()
            assert [x.get("name") for x in await ari.applications()] == [app]
            third = await started(b, call(asterisk, "1555003102"))
            await ari.hangup(second)
            await until(lambda: b.of("StasisEnd", second), 10, "StasisEnd of the second at B")

            # C replaces B and leaves while B is still connected: the name is unregistered
            # and B, replaced, does not get it back
            async with Client(asterisk, "C") as c:
                await until(lambda: b.of("ApplicationReplaced"), 10, "ApplicationReplaced at B")
                await ari.hangup(third)
                await until(lambda: c.of("StasisEnd", third), 10, "StasisEnd of the third at C")
            b_quiet_from = len(b.events)
            # (GET /applications may still list the name while the application object holds
            # subscriptions, here the bridge, but it has no handler: Stasis() fails)
            fourth = call(asterisk, "1555003103")
            queued = await until(lambda: queued_caller(ari), 25, "the fourth caller in Queue()")
            assert queued.caller.number == fourth
            assert not [e for e in b.events[b_quiet_from:] if e.type == "StasisStart"]
            await ari.hangup(queued.id)
        await ari.destroy_bridge(bridge.id)
