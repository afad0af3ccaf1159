"""The composition root: ``ari-app run`` builds the parts and runs them.

The interaction store (migrated), the ARI client, the metrics, the call handling
(:class:`ari_app.calls.app.BridgeApp`) and what runs beside it: the HTTP server (reports,
/metrics, /healthz) and the report scheduler. Started before the ARI event stream, stopped
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from ari_app.agents import AgentControl
from ari_app.asterisk import no_ari_password
from ari_app.calls.app import BridgeApp
from ari_app.calls.bye_context import ByeContexts
from ari_app.calls.handover import LOCK_FILE, HandoverApp, InstanceLock
from ari_app.config import Config, hep_password, mask_url
from ari_app.config.headers import agent_headers
from ari_app.connect import ari_rest
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.scheduler import ReportScheduler
from ari_app.reporting.web import settings_for, start_http_server
from ari_app.reporting.webhooks import WebhookSender, webhook_secret
from ari_app.store import InteractionStore, StoreError, open_store
from ari_app.store.retention import run_retention

log = logging.getLogger(__name__)

try:
    VERSION = metadata.version("botbridge")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    VERSION = "unknown"
# how often readiness asks the store (one trivial query; never per probe)
STORE_CHECK_SECONDS = 5.0
STORE_CHECK_TIMEOUT_SECONDS = 3.0


class StoreCheck:
    """Whether the store answered its last trivial query, refreshed in the background."""

    def __init__(self, store: InteractionStore) -> None:
        self.store = store
        self.reachable = True

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(self.store.ping), STORE_CHECK_TIMEOUT_SECONDS
                )
            except (StoreError, TimeoutError) as exc:
                if self.reachable:
                    log.error("interaction store unreachable: %s", exc)
                self.reachable = False
            else:
                if not self.reachable:
                    log.info("interaction store reachable again")
                self.reachable = True
            await asyncio.sleep(STORE_CHECK_SECONDS)


async def run_app(config: Config, *, take_over: bool = False) -> None:
    """Run until stopped. ``take_over``: another instance runs with this state directory,
    and this one takes its calls over (ari_app/calls/handover.py); without it, another
    instance running is an error."""
    if not config.ari_password:
        raise SystemExit(no_ari_password(config))
    lock = InstanceLock(config.state_dir / LOCK_FILE)
    if not take_over and not lock.try_acquire():
        raise SystemExit(
            f"another instance (pid {lock.holder()}) runs with the state directory "
            f"{config.state_dir}; `ari-app run --take-over` takes its calls over"
        )
    store = await asyncio.to_thread(open_store, config)  # migrates the schema to head
    log.info("interaction store %r, node %s", store, store.node)
    metrics = Metrics()
    async with ari_rest(config) as ari:
        bye_contexts: ByeContexts | None = None
        if config.bye_context.enabled:
            bye_contexts = ByeContexts(
                config.bye_context,
                hep_password(config),
                (config.sip.port, config.sip.tls_port),
                config.bridge.max_context_bytes,
                agent_headers(p.bot_headers for p in config.profiles.values()),
            )
        app = HandoverApp(
            config,
            ari,
            store,
            observer=metrics,
            bye_contexts=bye_contexts,
            lock=lock,
            take_over=take_over,
        )
        if bye_contexts is not None and not app.take_over:
            await bye_contexts.start()  # a successor binds its port once the old one let go
        loop = asyncio.get_running_loop()
        draining: set[asyncio.Task[None]] = set()

        def drain() -> None:  # SIGTERM/SIGINT: finish the calls in hand, then exit 0
            task = loop.create_task(app.drain(), name="drain")
            draining.add(task)
            task.add_done_callback(draining.discard)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, drain)
        log.info("bot bridge app %s starting against %s", config.ari.app, mask_url(config.ari.url))
        running = asyncio.create_task(app.run(), name="app")
        try:
            # a successor serves HTTP (its port is the old instance's) once it owns the calls
            owning = asyncio.create_task(app.owning.wait())
            await asyncio.wait({owning, running}, return_when=asyncio.FIRST_COMPLETED)
            owning.cancel()
            async with side_services(config, store, app, metrics):
                frozen = freeze_startup_heap()
                log.info("%d objects of the start-up kept out of garbage collection", frozen)
                await running
        finally:
            if not running.done():
                app.stop()
                with contextlib.suppress(Exception):
                    await running
            if bye_contexts is not None:
                bye_contexts.close()
    store.close()
    lock.release()


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive (modules, configuration, the clients' and
    the store's machinery: about 90,000) to the collector's permanent generation
    (``gc.freeze``); how many. A full collection under load then walks only what calls
    made since: measured at 50 calls/s, 1.8 ms instead of 53-76 ms, during which the event
    loop, and every call, waited (docs/performance.md, series 5)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.asynccontextmanager
async def side_services(
    config: Config, store: InteractionStore, app: BridgeApp, metrics: Metrics
) -> AsyncIterator[None]:
    """The HTTP server, the report scheduler and the webhook sender, with the app's figures
    in the metrics."""
    sender = (
        WebhookSender(config.webhooks, store, webhook_secret(config))
        if config.webhooks.enabled
        else None
    )
    bye = app.bye_contexts
    metrics.bind(
        active_calls=lambda: len(app.sessions),
        reconnects=lambda: app.stream.reconnects,
        connected=lambda: app.stream.connected,
        ari_requests=lambda: app.ari.requests,
        ari_events=lambda: app.stream.received,
        pending_events=lambda: app.dispatcher.pending,
        record_backlog=lambda: app.records.backlog,
        record_writer=app.records.health,
        shed=lambda: app.shed,
        bot_active=app.bot_active_calls,
        bot_reachable=app.bot_reachability,
        webhooks=sender.counts if sender is not None else dict,
        bye_copies=bye.counts if bye is not None else dict,
        bye_copies_held=bye.held if bye is not None else lambda: 0,
        bye_dialogs=bye.followed if bye is not None else lambda: 0,
    )

    store_check = StoreCheck(store)
    checker = asyncio.create_task(store_check.run(), name="store-check")

    def health() -> dict[str, Any]:
        reasons = []
        if app.draining:
            reasons.append("draining")
        if not app.stream.connected:
            reasons.append("ari_disconnected")
        if not store_check.reachable:
            reasons.append("store_unreachable")
        if not app.records.writable:
            reasons.append("records_unwritable")
        return {
            "version": VERSION,
            "state": "draining" if app.draining else "running",
            "active_calls": app.active_calls,
            "ari_connected": app.stream.connected,
            "store_reachable": store_check.reachable,
            "records": app.records.health(),
            "reasons": reasons,
        }

    runner = None
    agent_ari = None
    if config.http.enabled:
        # agent requests (/agents) on a client of their own: never queued behind calls'
        agent_ari = ari_rest(config)
        settings = settings_for(config, store, metrics, health, AgentControl(agent_ari, config))
        runner = await start_http_server(config, settings)
    scheduler = ReportScheduler(config, store, metrics=metrics)
    task = asyncio.create_task(scheduler.run(), name="report-scheduler")
    tasks = [task, asyncio.create_task(run_retention(store, config), name="retention")]
    if sender is not None:
        tasks.append(asyncio.create_task(sender.run(), name="webhook-sender"))
        log.info(
            "webhooks: %d URL(s), events on %s",
            len(config.webhooks.urls),
            ", ".join(config.webhooks.outcomes),
        )
    try:
        yield
    finally:
        checker.cancel()
        for running in tasks:
            running.cancel()
        for running in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await running
        if runner is not None:
            await runner.cleanup()
        if agent_ari is not None:
            await agent_ari.close()
