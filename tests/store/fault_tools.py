"""Tools of the record writer's fault tests: a TCP proxy that cuts a PostgreSQL connection
right after the server's reply to COMMIT, and a steady stream of simulated calls."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

from ari_app.store.writer import RecordWriter

# PostgreSQL's CommandComplete message for a COMMIT: 'C', length 11 (int32), "COMMIT\0"
COMMIT_REPLY = b"C\x00\x00\x00\x0bCOMMIT\x00"


class CommitCutProxy:
    """Relays 127.0.0.1:<port> to a PostgreSQL server. While armed, the first reply to a COMMIT
    is relayed up to the end of its CommandComplete (so the server has committed, but the
    client never sees ReadyForQuery), then both sides are closed: the client cannot tell
    whether its transaction committed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cuts = 0
        self.armed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def start(self) -> int:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Every connection closed and its handler finished, inside the proxy's loop."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]

        def cut() -> None:
            writer.close()
            up_writer.close()

        async def upward() -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
            cut()

        async def downward() -> None:
            tail = b""
            with contextlib.suppress(OSError):
                while data := await up_reader.read(65536):
                    window = tail + data
                    at = window.find(COMMIT_REPLY) if self.armed.is_set() else -1
                    if at >= 0:
                        self.armed.clear()
                        self.cuts += 1
                        writer.write(data[: max(at + len(COMMIT_REPLY) - len(tail), 0)])
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        break
                    writer.write(data)
                    await writer.drain()
                    tail = window[-len(COMMIT_REPLY) :]
            cut()

        await asyncio.gather(upward(), downward(), return_exceptions=True)


def caller_number(n: int) -> str:
    return f"+4930555{n:05d}"


@dataclass
class CallStream:
    """Calls made at ``rate`` per second, each written as the app writes one: created, bot
    dialling, bot connected, resolved; ``calls`` lists every interaction id started."""

    writer: RecordWriter
    rate: float
    calls: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, seconds: float) -> None:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            iid = f"{len(self.calls):032x}"
            self.calls.append(iid)
            task = asyncio.create_task(self._call(iid, n))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.rate - time.monotonic()))
        await asyncio.gather(*self._tasks)

    async def _call(self, iid: str, n: int) -> None:
        w = self.writer
        w.create(iid, profile="default", caller_channel=f"c-{iid}", caller_number=caller_number(n))
        await asyncio.sleep(0.2)
        w.update(iid, state="bot_dialling", bot_channel=f"bot-{iid}")
        await asyncio.sleep(0.3)
        w.update(iid, state="bot_connected", bot_answered_at=time.time())
        await asyncio.sleep(0.5)
        now = time.time()
        w.update(iid, state="resolved", outcome="resolved", bot_ended_at=now, ended_at=now)


async def drained(writer: RecordWriter, timeout: float) -> bool:
    """Wait until everything the writer holds is in the database (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if writer.backlog == 0 and writer.unwritten_seconds() == 0:
            return True
        await asyncio.sleep(0.1)
    return False
