"""The app's HTTP server: report downloads, the report page, Prometheus metrics, health.

Endpoints (docs/reports.md):

- ``GET /reports.csv``, ``GET /reports.json`` -- query ``from``, ``to`` (YYYY-MM-DD, both
  included; default the last 7 days), ``group_by`` (day|profile|queue|node, default day);
- ``GET /reports`` -- the same as an HTML page with an inline SVG chart;
- ``GET /interactions/{id}`` -- one interaction as an agent desktop pulls it (context, bot
  time, escalation attempts, timeline; ``interaction.py``), 404 when unknown;
- ``GET /metrics`` -- Prometheus text format;
- ``GET /readyz`` -- readiness: 200 ``{"status": "ok", ...}`` when the app can take calls,
  503 ``{"status": "unavailable", "reasons": [...]}`` when the ARI event socket is down, the
  app is draining or the store is unreachable; never authenticated;
- ``GET /healthz`` -- liveness: the same, except that draining is not a reason (a draining
  app is alive and must not be restarted before its calls are done).

Reports are built off the event loop that the ARI reader shares: reading the records,
summing the figures and rendering run in worker processes (``jobs.py``), at most ``[http]
max_concurrent_reports`` at once; a report request beyond that gets 503 with Retry-After.

Authentication: ``Authorization: Bearer <token>``, compared in constant time; the HTML page
also takes ``?token=`` so that a browser can open it. ``/metrics`` needs the token unless
the server listens on a loopback address only.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from ari_app.config import Config, ensure_secret_file
from ari_app.reporting.interaction import INTERACTION_ID, interaction_view
from ari_app.reporting.jobs import PAGE, Records, ReportJob, store_records, worker_started
from ari_app.reporting.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.periods import (
    Period,
    ReportError,
    check_group_by,
    parse_day,
    timezone_named,
)
from ari_app.store import InteractionStore

log = logging.getLogger(__name__)

TOKEN_ENV = "BOTBRIDGE_HTTP_TOKEN"
TOKEN_BYTES = 32
DEFAULT_DAYS = 7
# what a report request refused for the concurrency limit is told to wait (docs/reports.md)
REPORT_RETRY_AFTER_SECONDS = 5
TOKEN_QUERY = "token"  # accepted by the HTML page only
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?token=
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

__all__ = ["Records", "ReportWorkers", "WebSettings", "start_http_server", "store_records"]


class Agents(Protocol):
    """Agents at run time (ari_app/agents.py ``AgentControl``); a ValueError names what is
    wrong with a request."""

    async def act(self, name: str, action: str) -> Mapping[str, str]: ...

    async def states(self, names: list[str] | None = None) -> Mapping[str, Mapping[str, str]]: ...


@dataclass
class WebSettings:
    token: str
    records: Records
    tz: tzinfo
    max_concurrent_reports: int
    metrics: Metrics | None = None
    metrics_public: bool = False
    health: Callable[[], Mapping[str, Any]] = field(default=lambda: {})
    clock: Callable[[], float] = time.time
    # one stored record by interaction id (run in a thread: one indexed row); None: no store
    interaction: Callable[[str], Mapping[str, Any] | None] | None = None
    agents: Agents | None = None


class ReportWorkers:
    """Worker processes that build reports, at most ``limit`` reports at once.

    A report is read, summed and rendered in one of these processes, never in the app's
    process. A request beyond the limit is refused at once (503, ``Retry-After``) rather
    than queued. Processes are started on first use (``spawn``: a fresh interpreter, not a
    fork of a process with threads) and kept for later reports.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_reports must be at least 1, got {limit}")
        self.limit = limit
        self.running = 0
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.limit,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker_started,
        )

    async def run(self, job: Callable[[], str]) -> str:
        """``job()`` in a worker process (``job`` is pickled: a ``ReportJob``)."""
        if self.running >= self.limit:
            raise _busy(f"{self.limit} reports are being built; try again later")
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(job)
        except BrokenProcessPool:
            self._pool = self._new_pool()
            raise _busy("the report workers restarted; try again") from None
        self.running += 1
        # the slot is free when the worker is done, even if the request went away before
        future.add_done_callback(functools.partial(self._finished, loop))
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start anew
            log.error("a report worker process died building %r; restarting the workers", job)
            self._pool = self._new_pool()
            raise _busy("the report worker failed; try again") from None

    def _finished(self, loop: asyncio.AbstractEventLoop, _: Future[str]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self.running -= 1

    def close(self) -> None:
        """Stop the workers once their reports are done; reports not started are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _busy(reason: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=f"503: {reason}\n", headers={"Retry-After": str(REPORT_RETRY_AFTER_SECONDS)}
    )


SETTINGS = web.AppKey("settings", WebSettings)
WORKERS = web.AppKey("report_workers", ReportWorkers)


# -- the token -----------------------------------------------------------------------------


def ensure_token_file(config: Config) -> Path:
    """Create ``[http] token_file`` with a random token when absent (mode 0600)."""
    return ensure_secret_file(config.state_path(config.http.token_file), TOKEN_BYTES)


def http_token(config: Config, env: Mapping[str, str] | None = None) -> str:
    """BOTBRIDGE_HTTP_TOKEN, else the token file (created when absent)."""
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    path = ensure_token_file(config)
    token = path.read_text().strip()
    if not token:
        raise SystemExit(f"the HTTP token file {path} is empty")
    log.info("HTTP bearer token: in %s", path)
    return token


def _token_matches(given: str | None, expected: str) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="401: a valid bearer token is required\n",
        headers={"WWW-Authenticate": 'Bearer realm="botbridge"'},
    )


def _authorized(request: web.Request, *, query_token: bool = False) -> bool:
    expected = request.app[SETTINGS].token
    if _token_matches(_bearer(request), expected):
        return True
    return query_token and _token_matches(request.query.get(TOKEN_QUERY), expected)


# -- the report query ----------------------------------------------------------------------


def report_query(query: Mapping[str, str], today: date, tz: tzinfo) -> tuple[Period, str]:
    """``from``/``to``/``group_by`` from a query string; defaults: the last 7 days by day."""
    last = parse_day(query["to"], "to") if query.get("to") else today
    if query.get("from"):
        first = parse_day(query["from"], "from")
    else:
        try:
            first = last - timedelta(days=DEFAULT_DAYS - 1)
        except OverflowError as exc:  # the default start is before the first day there is
            raise ReportError(f"to ({last}) is out of range") from exc
    period = Period(first, last, tz)  # its length checked from the two dates alone
    return period, check_group_by(query.get("group_by") or "day")


async def _rendered(request: web.Request, fmt: str) -> tuple[Period, str, str]:
    """The period, grouping and rendered report the query asks for, built in a worker."""
    settings = request.app[SETTINGS]
    today = datetime.fromtimestamp(settings.clock(), settings.tz).date()
    try:
        period, group_by = report_query(request.query, today, settings.tz)
    except ReportError as exc:
        raise web.HTTPBadRequest(text=f"400: {exc}\n") from exc
    # the page keeps the token in its form only when it came in the URL (no header)
    token = request.query.get(TOKEN_QUERY) if fmt == PAGE and _bearer(request) is None else None
    job = ReportJob(settings.records, period, group_by, fmt, token)
    return period, group_by, await request.app[WORKERS].run(job)


def _filename(period: Period, group_by: str, extension: str) -> str:
    return f"botbridge-report-{period.first_day}-{period.last_day}-{group_by}.{extension}"


async def reports_csv(request: web.Request) -> web.StreamResponse:
    if not _authorized(request):
        return _unauthorized()
    period, group_by, text = await _rendered(request, "csv")
    name = _filename(period, group_by, "csv")
    return web.Response(
        text=text,
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def reports_json(request: web.Request) -> web.StreamResponse:
    if not _authorized(request):
        return _unauthorized()
    _, _, text = await _rendered(request, "json")
    return web.Response(text=text, content_type="application/json")


async def reports_page(request: web.Request) -> web.StreamResponse:
    if not _authorized(request, query_token=True):
        return _unauthorized()
    _, _, text = await _rendered(request, PAGE)
    return web.Response(
        text=text,
        content_type="text/html",
        headers={"Content-Security-Policy": _PAGE_CSP},
    )


async def interaction(request: web.Request) -> web.StreamResponse:
    """``GET /interactions/{id}``: the record of one call, for the agent's desktop."""
    if not _authorized(request):
        return _unauthorized()
    lookup = request.app[SETTINGS].interaction
    interaction_id = request.match_info["interaction_id"]
    record = None
    if lookup is not None and INTERACTION_ID.fullmatch(interaction_id):
        record = await asyncio.to_thread(lookup, interaction_id)
    if record is None:
        raise web.HTTPNotFound(text="404: no such interaction\n")
    return web.json_response(interaction_view(record))


async def metrics(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if settings.metrics is None:
        raise web.HTTPNotFound(text="404: metrics are off\n")
    if not settings.metrics_public and not _authorized(request):
        return _unauthorized()
    return web.Response(
        body=settings.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


async def agents_list(request: web.Request) -> web.StreamResponse:
    """``GET /agents``: every agent's state in each of its queues."""
    if not _authorized(request):
        return _unauthorized()
    return web.json_response(await _agents(request).states())


async def agent_action(request: web.Request) -> web.StreamResponse:
    """``POST /agents/{name}/{login|logout|pause|unpause}``: the agent's state after it."""
    if not _authorized(request):
        return _unauthorized()
    name = request.match_info["name"]
    try:
        state = await _agents(request).act(name, request.match_info["action"])
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"400: {exc}\n") from exc
    return web.json_response({name: state})


def _agents(request: web.Request) -> Agents:
    agents = request.app[SETTINGS].agents
    if agents is None:
        raise web.HTTPNotFound(text="404: agent control is off\n")
    return agents


# a reason that makes an app not ready but still alive (readiness only)
NOT_READY_ONLY = frozenset({"draining", "records_unwritable"})


async def healthz(request: web.Request) -> web.StreamResponse:
    return _health_response(request, ignore=NOT_READY_ONLY)


async def readyz(request: web.Request) -> web.StreamResponse:
    return _health_response(request, ignore=frozenset())


def _health_response(request: web.Request, ignore: frozenset[str]) -> web.StreamResponse:
    figures = dict(request.app[SETTINGS].health())
    reasons = [r for r in figures.pop("reasons", ()) if r not in ignore]
    if reasons:
        return web.json_response(
            {"status": "unavailable", "reasons": reasons, **figures}, status=503
        )
    return web.json_response({"status": "ok", **figures})


@web.middleware
async def _headers_and_counts(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        exc.headers.update(_SECURITY_HEADERS)
        raise
    finally:
        settings = request.app[SETTINGS]
        if settings.metrics is not None:
            resource = request.match_info.route.resource
            endpoint = resource.canonical if resource is not None else "other"
            settings.metrics.http_requests.labels(endpoint, str(status)).inc()
    response.headers.update(_SECURITY_HEADERS)
    return response


class _AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: it may hold the token), status, duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # scrapes and health checks every few seconds would drown the call log
        quiet = request.path in {"/metrics", "/healthz", "/readyz"} and response.status < 400
        self.logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s %d %.1f ms",
            request.remote,
            request.method,
            request.path,
            response.status,
            time * 1000,
        )


def create_web_app(settings: WebSettings) -> web.Application:
    app = web.Application(middlewares=[_headers_and_counts])
    app[SETTINGS] = settings
    app[WORKERS] = ReportWorkers(settings.max_concurrent_reports)

    async def close_workers(app: web.Application) -> None:
        await asyncio.to_thread(app[WORKERS].close)

    app.on_cleanup.append(close_workers)
    app.router.add_get("/reports.csv", reports_csv)
    app.router.add_get("/reports.json", reports_json)
    app.router.add_get("/reports", reports_page)
    app.router.add_get("/interactions/{interaction_id}", interaction)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/agents", agents_list)
    app.router.add_post("/agents/{name}/{action}", agent_action)
    return app


def is_loopback(host: Any) -> bool:
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def settings_for(
    config: Config,
    store: InteractionStore,
    metrics: Metrics | None,
    health: Callable[[], Mapping[str, Any]] = lambda: {},
    agents: Agents | None = None,
) -> WebSettings:
    return WebSettings(
        token=http_token(config),
        records=store_records(store),
        tz=timezone_named(config.reports.timezone),
        max_concurrent_reports=config.http.max_concurrent_reports,
        metrics=metrics,
        metrics_public=is_loopback(config.http.host),
        health=health,
        interaction=store.get,
        agents=agents,
    )


async def start_http_server(config: Config, settings: WebSettings) -> web.AppRunner:
    """Listen on ``[http] host:port``; a port in use stops the app with a clear message."""
    runner = web.AppRunner(
        create_web_app(settings),
        access_log_class=_AccessLogger,
        access_log=logging.getLogger("ari_app.reporting.web.access"),
    )
    await runner.setup()
    host, port = str(config.http.host), config.http.port
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(
            f"cannot listen on {host}:{port} for reports and metrics ({exc.strerror}): set "
            "[http] port (BOTBRIDGE_HTTP_PORT) or enabled = false"
        ) from exc
    log.info(
        "HTTP server on http://%s:%d (reports, metrics%s, healthz)",
        host,
        port,
        "" if settings.metrics_public else " with token",
    )
    return runner
