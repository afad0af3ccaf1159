"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1 that checks signatures.

It records every POST with its event id header; tests assert each event arrived once.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ari_app.reporting.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

SECRET = b"test-webhook-secret"
SIGNATURE_TOLERANCE_SECONDS = 300


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that checks signatures and counts each event id."""

    port: int
    status: int = 200
    delay: float = 0.0
    posts: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    arrived: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(
            SECRET,
            request.headers.get(SIGNATURE_HEADER, ""),
            body,
            now=time.time(),
            tolerance=SIGNATURE_TOLERANCE_SECONDS,
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.arrived += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        self.posts.append(
            {"id": request.headers[EVENT_ID_HEADER], "body": json.loads(body), "raw": body}
        )
        return web.Response(status=self.status)

    def ids(self) -> list[str]:
        return [p["id"] for p in self.posts]
