"""The composition root: ``ari-app run`` builds the parts and runs them.

The interaction store (migrated), the ARI client, the metrics, the call handling
(:class:`ari_app.calls.app.BridgeApp`) and what runs beside it: the HTTP server (reports,
/metrics, /healthz) and the report scheduler. Started before the ARI event stream, stopped
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from ari_app.calls.app import BridgeApp
from ari_app.config import Config
from ari_app.connect import ari_rest
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.scheduler import ReportScheduler
from ari_app.reporting.web import settings_for, start_http_server
from ari_app.store import InteractionStore, open_store

log = logging.getLogger(__name__)


async def run_app(config: Config) -> None:
    if not config.ari_password:
        raise SystemExit("no ARI password: set BOTBRIDGE_ARI_PASSWORD or run `make setup`")
    store = await asyncio.to_thread(open_store, config)  # migrates the schema to head
    log.info("interaction store %r, node %s", store, store.node)
    metrics = Metrics()
    async with ari_rest(config) as ari:
        app = BridgeApp(config, ari, store, observer=metrics)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.stop)
        log.info("bot bridge app %s starting against %s", config.app_name, config.ari_url)
        async with side_services(config, store, app, metrics):
            await app.run()
    store.close()


@contextlib.asynccontextmanager
async def side_services(
    config: Config, store: InteractionStore, app: BridgeApp, metrics: Metrics
) -> AsyncIterator[None]:
    """The HTTP server and the report scheduler, with the app's figures in the metrics."""
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

    def health() -> dict[str, Any]:
        return {"ari_connected": app.stream.connected}

    runner = None
    if config.http.enabled:
        runner = await start_http_server(config, settings_for(config, store, metrics, health))
    scheduler = ReportScheduler(config, store, metrics=metrics)
    task = asyncio.create_task(scheduler.run(), name="report-scheduler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if runner is not None:
            await runner.cleanup()
