"""What runs beside the call handling in ``run_app``: metrics, the HTTP server and the
report scheduler. Started before the ARI event stream, stopped after it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ari_app.config import Config
from ari_app.metrics import Metrics
from ari_app.reports import RecordSource
from ari_app.scheduler import ReportScheduler
from ari_app.web import settings_for, start_http_server

if TYPE_CHECKING:
    from ari_app.app import BridgeApp

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def side_services(
    config: Config, store: RecordSource, app: BridgeApp
) -> AsyncIterator[Metrics]:
    metrics = Metrics()
    metrics.bind(
        active_calls=lambda: len(app.sessions),
        reconnects=lambda: app.stream.reconnects,
        connected=lambda: app.stream.connected,
        ari_requests=lambda: app.ari.requests,
        ari_events=lambda: app.stream.received,
        pending_events=lambda: app.dispatcher.pending,
        record_backlog=lambda: app.records.backlog,
        shed=lambda: app.shed,
    )
    app.observer = metrics

    def health() -> dict[str, Any]:
        return {"ari_connected": app.stream.connected}

    runner = None
    if config.http.get("enabled"):
        runner = await start_http_server(config, settings_for(config, store, metrics, health))
    scheduler = ReportScheduler(config, store, metrics=metrics)
    task = asyncio.create_task(scheduler.run(), name="report-scheduler")
    try:
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if runner is not None:
            await runner.cleanup()
