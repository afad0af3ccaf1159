"""The HTTP server: report downloads, the page, metrics and health, against a real store."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import signal
import stat
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ari_app.config import load_config
from ari_app.records import Record
from ari_app.reporting.aggregation import build_report
from ari_app.reporting.jobs import StoreRecords
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.periods import Period, ReportError
from ari_app.reporting.rendering import report_dict
from ari_app.reporting.report_html import chart_svg
from ari_app.reporting.web import (
    REPORT_RETRY_AFTER_SECONDS,
    TOKEN_ENV,
    ReportWorkers,
    WebSettings,
    create_web_app,
    ensure_token_file,
    http_token,
    is_loopback,
    report_query,
    start_http_server,
    store_records,
)
from ari_app.store import InteractionStore
from devtools.stack import free_port
from tests.records import create, update

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2024, 5, 8, 12, 0, tzinfo=UTC).timestamp()  # "today" is 8 May 2024
HOSTILE = "<script>alert(1)</script>"


def _at(day: int, hour: int = 10) -> float:
    return datetime(2024, 5, day, hour, 0, tzinfo=UTC).timestamp()


# (day, outcome, profile, queue, escalate_to, bot seconds)
CALLS = [
    (2, "resolved", "default", None, None, 40),
    (2, "escalated", "default", "agents-queue", "agents-queue", 70),
    (3, "escalated", "sales", "billing-queue", "billing", 20),
    (3, "escalated", "sales", "agents-queue", HOSTILE, 20),
    (3, "resolved", "sales", None, None, 130),
    (5, "bot_failed", "default", "agents-queue", None, None),
    (6, "abandoned", "default", None, None, 5),
    (7, "resolved", "default", None, None, 61),
    (7, "resolved", "default", None, None, 59),
    (7, "escalated", "default", "agents-queue", "agents-queue", 30),
    (1, "resolved", "default", None, None, 10),  # outside the default 7 days (2-8 May)
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InteractionStore]:
    store = InteractionStore(tmp_path / "interactions.sqlite3")
    for i, (day, outcome, profile, queue, target, seconds) in enumerate(CALLS):
        start = _at(day) + i
        create(store, f"call{i}", profile=profile, caller_channel=f"c{i}", started_at=start)
        fields: dict[str, Any] = {"outcome": outcome, "state": outcome, "queue": queue}
        if seconds is not None:
            fields["bot_answered_at"] = start + 1
            end = start + 1 + seconds
            fields["transfer_at" if outcome == "escalated" else "ended_at"] = end
        fields["ended_at"] = fields.get("ended_at") or start + 300
        if target:
            fields["escalate_to"] = target
        update(store, f"call{i}", **fields)
    yield store
    store.close()


def _settings(store: InteractionStore, **extra: Any) -> WebSettings:
    values: dict[str, Any] = {
        "token": TOKEN,
        "records": store_records(store),
        "tz": UTC,
        "max_concurrent_reports": load_config(env={}).http.max_concurrent_reports,
        "metrics": Metrics(process=False),
        "metrics_public": True,
        "health": lambda: {"ari_connected": True},
        "clock": lambda: NOW,
    }
    values.update(extra)
    return WebSettings(**values)


@pytest.fixture
async def client(store: InteractionStore) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_web_app(_settings(store)))) as client:
        yield client


async def test_healthz_needs_no_token(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "ari_connected": True}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("reasons", "healthz", "readyz"),
    [
        ([], 200, 200),
        (["ari_disconnected"], 503, 503),
        (["store_unreachable", "ari_disconnected"], 503, 503),
        (["draining"], 200, 503),  # a draining app is alive, not ready
        (["records_unwritable"], 200, 503),  # a restart would not help the database
    ],
)
async def test_health_and_readiness_say_why(
    store: InteractionStore, reasons: list[str], healthz: int, readyz: int
) -> None:
    settings = _settings(store, health=lambda: {"active_calls": 3, "reasons": reasons})
    async with TestClient(TestServer(create_web_app(settings))) as client:
        for path, expected in (("/healthz", healthz), ("/readyz", readyz)):
            response = await client.get(path)
            body = await response.json()
            assert response.status == expected, (path, body)
            assert body["active_calls"] == 3
            if expected == 503:
                assert body["status"] == "unavailable" and body["reasons"]
                assert set(body["reasons"]) <= set(reasons)
            else:
                assert body["status"] == "ok" and "reasons" not in body


@pytest.mark.parametrize("path", ["/reports.csv", "/reports.json", "/reports"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ],
)
async def test_reports_need_the_token(
    client: TestClient[Any, Any], path: str, headers: dict[str, str]
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="botbridge"'
    assert "escalated" not in await response.text()


@pytest.mark.parametrize("path", ["/reports.csv", "/reports.json"])
async def test_downloads_do_not_take_the_token_in_the_url(
    client: TestClient[Any, Any], path: str
) -> None:
    response = await client.get(path, params={"token": TOKEN})
    assert response.status == 401


async def test_csv_download(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/reports.csv", params={"from": "2024-05-02", "to": "2024-05-08"}, headers=AUTH
    )
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="botbridge-report-2024-05-02-2024-05-08-day.csv"'
    )
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [r["day"] for r in rows] == [
        "2024-05-02",
        "2024-05-03",
        "2024-05-04",
        "2024-05-05",
        "2024-05-06",
        "2024-05-07",
        "2024-05-08",
        "(total)",
    ]
    by_day = {r["day"]: r for r in rows}
    assert by_day["2024-05-03"]["escalated"] == "2"
    assert by_day["2024-05-03"]["containment_rate"] == "0.3333"
    assert by_day["2024-05-04"]["containment_rate"] == ""
    total = by_day["(total)"]
    assert (total["total"], total["resolved"], total["escalated"]) == ("10", "4", "4")
    assert (total["bot_failed"], total["abandoned"]) == ("1", "1")
    assert total["containment_rate"] == "0.5"
    assert total["bot_failure_rate"] == "0.1"
    assert total["abandon_rate"] == "0.1"
    # 40 70 20 20 130 5 61 59 30 s -> 1 2 1 1 3 1 2 1 1 minutes
    assert total["billable_minutes"] == "13"
    assert total["usage_minutes_by_profile"] == "default=8;sales=5"
    assert total["escalation_targets"] == f'agents-queue=2;"{HOSTILE}"=1;billing=1'


async def test_json_by_profile(client: TestClient[Any, Any], store: InteractionStore) -> None:
    query = {"from": "2024-05-01", "to": "2024-05-31", "group_by": "profile"}
    response = await client.get("/reports.json", params=query, headers=AUTH)
    assert response.status == 200
    assert response.content_type == "application/json"
    data = await response.json()
    expected = build_report(store.all(), Period.parse("2024-05-01", "2024-05-31"), "profile")
    assert data == json.loads(json.dumps(report_dict(expected)))
    assert [r["key"] for r in data["rows"]] == ["default", "sales"]
    assert data["total"]["total"] == 11


async def test_default_period_is_the_last_seven_days(client: TestClient[Any, Any]) -> None:
    data = await (await client.get("/reports.json", headers=AUTH)).json()
    assert (data["from"], data["to"], data["group_by"]) == ("2024-05-02", "2024-05-08", "day")
    assert data["total"]["total"] == 10


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "2024-13-01"}, "from must be a date"),
        ({"to": "yesterday"}, "to must be a date"),
        ({"from": "2024-05-05", "to": "2024-05-01"}, "ends"),
        ({"group_by": "team"}, "group_by must be one of"),
        ({"from": "1900-01-01", "to": "2024-01-01"}, "longer than"),
        ({"from": "0001-01-01", "to": "9999-12-31"}, "longer than"),
        ({"to": "9999-12-31"}, "to (9999-12-31) is out of range"),
        ({"from": "9999-12-31", "to": "9999-12-31"}, "to (9999-12-31) is out of range"),
        ({"to": "0001-01-03"}, "to (0001-01-03) is out of range"),  # its default start is not
    ],
)
async def test_bad_queries(
    client: TestClient[Any, Any], query: dict[str, str], message: str
) -> None:
    response = await client.get("/reports.json", params=query, headers=AUTH)
    assert response.status == 400
    assert message in await response.text()
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# what deciding on a period may allocate; a list of every day of 0001..9999 takes ~150 MB
QUERY_MEMORY_BYTES = 1_000_000


def test_a_maximal_period_is_refused_before_its_days_are_built() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ReportError, match="longer than"):
            report_query({"from": "0001-01-01", "to": "9999-12-31"}, date(2024, 5, 8), UTC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < QUERY_MEMORY_BYTES


# how long a test waits for a report worker to reach a point, and how often it looks
WORKER_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class GatedRecords:
    """Reads the store like ``StoreRecords`` (in a worker process), once ``gate`` exists;
    ``reading`` is created when it starts waiting."""

    url: str
    reading: Path
    gate: Path

    def __call__(self, start_ts: float, end_ts: float) -> list[Record]:
        self.reading.touch()
        deadline = time.monotonic() + WORKER_WAIT_SECONDS
        while not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        return StoreRecords(self.url)(start_ts, end_ts)


async def _appears(path: Path) -> bool:
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while not path.exists() and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
    return path.exists()


async def test_reports_beyond_the_limit_get_503_with_retry_after(
    store: InteractionStore, tmp_path: Path
) -> None:
    reading, gate = tmp_path / "reading", tmp_path / "gate"
    records = GatedRecords(store_records(store).url, reading, gate)
    settings = _settings(store, records=records, max_concurrent_reports=1)
    async with TestClient(TestServer(create_web_app(settings))) as client:
        first = asyncio.ensure_future(client.get("/reports.json", headers=AUTH))
        assert await _appears(reading)
        for path in ("/reports.json", "/reports.csv", "/reports"):
            busy = await client.get(path, headers=AUTH)
            assert busy.status == 503, path
            assert busy.headers["Retry-After"] == str(REPORT_RETRY_AFTER_SECONDS)
            assert "reports are being built" in await busy.text()
        assert (await client.get("/healthz")).status == 200  # the rest of the server answers
        gate.touch()
        response = await first
        assert response.status == 200
        assert (await response.json())["total"]["total"] == 10
        # the slot is free again once the build is done
        again = await client.get("/reports.json", headers=AUTH)
        assert again.status == 200
        text = await (await client.get("/metrics")).text()
        assert 'botbridge_http_requests_total{endpoint="/reports.json",status="503"} 1.0' in text


def _sigint_handler() -> str:
    return repr(signal.getsignal(signal.SIGINT))


def _die() -> str:
    os._exit(1)


async def test_report_workers_leave_ctrl_c_to_the_app() -> None:
    workers = ReportWorkers(1)
    try:
        assert await workers.run(_sigint_handler) == repr(signal.SIG_IGN)
    finally:
        await asyncio.to_thread(workers.close)


async def test_a_worker_that_dies_is_a_503_and_the_workers_start_anew() -> None:
    workers = ReportWorkers(1)
    try:
        with pytest.raises(aiohttp.web.HTTPServiceUnavailable) as refused:
            await workers.run(_die)
        assert refused.value.headers["Retry-After"] == str(REPORT_RETRY_AFTER_SECONDS)
        assert workers.running == 0
        assert await workers.run(_sigint_handler) == repr(signal.SIG_IGN)
    finally:
        await asyncio.to_thread(workers.close)


def test_report_workers_need_at_least_one_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReportWorkers(0)


async def test_page_with_a_token_in_the_url(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/reports", params={"token": TOKEN, "from": "2024-05-02", "to": "2024-05-08"}
    )
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = await response.text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # the bot's hostile target is escaped, nothing else is script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    # the form keeps the token so that "Show" works from a browser
    assert f'name="token" value="{TOKEN}"' in page
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in root.iter(f"{ns}rect") if r.get("class") == "bar"]
    points = [c for c in root.iter(f"{ns}circle") if c.get("class") == "point"]
    assert len(bars) == 3  # 2, 3 and 7 May have escalations
    assert len(points) == 3  # 2, 3 and 7 May have resolved or escalated calls (6 May: none)
    assert "containment rate" in page and "data:text/csv" in page


async def test_page_with_a_bearer_header_does_not_echo_it(client: TestClient[Any, Any]) -> None:
    response = await client.get("/reports", params={"group_by": "queue"}, headers=AUTH)
    assert response.status == 200
    page = await response.text()
    assert TOKEN not in page
    assert "agents-queue" in page and "billing-queue" in page


async def test_metrics_public_on_loopback(client: TestClient[Any, Any]) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    assert 'botbridge_call_outcomes_total{outcome="resolved"} 0.0' in text
    assert "botbridge_transfer_handling_seconds_count 0.0" in text
    assert 'botbridge_http_requests_total{endpoint="/healthz",status="200"} 1.0' in text


async def test_metrics_need_the_token_off_loopback(store: InteractionStore) -> None:
    app = create_web_app(_settings(store, metrics_public=False))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers=AUTH)).status == 200


async def test_metrics_off(store: InteractionStore) -> None:
    async with TestClient(TestServer(create_web_app(_settings(store, metrics=None)))) as client:
        assert (await client.get("/metrics", headers=AUTH)).status == 404


async def test_unknown_paths_share_one_metric_label(client: TestClient[Any, Any]) -> None:
    for path in ("/a", "/b", "/c"):
        assert (await client.get(path)).status == 404
    text = await (await client.get("/metrics")).text()
    assert 'botbridge_http_requests_total{endpoint="other",status="404"} 3.0' in text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ("2024-05-02", "2024-05-08", "day")),
        ({"to": "2024-01-03"}, ("2023-12-28", "2024-01-03", "day")),
        ({"from": "2024-05-01", "group_by": "queue"}, ("2024-05-01", "2024-05-08", "queue")),
        ({"from": "2024-05-01", "to": "2024-05-01"}, ("2024-05-01", "2024-05-01", "day")),
    ],
)
def test_report_query(query: dict[str, str], expected: tuple[str, str, str]) -> None:
    period, group_by = report_query(query, datetime(2024, 5, 8).date(), UTC)
    assert (period.first_day.isoformat(), period.last_day.isoformat(), group_by) == expected


def test_token_from_env_or_a_new_file(tmp_path: Path) -> None:
    env = {"BOTBRIDGE_STATE_DIR": str(tmp_path / "state")}
    config = load_config(env=env)
    assert http_token(config, {TOKEN_ENV: "from-env"}) == "from-env"
    assert not (tmp_path / "state" / "http-token").exists()
    first = http_token(config, {})
    path = ensure_token_file(config)
    assert path == tmp_path / "state" / "http-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert http_token(config, {}) == first  # kept, not regenerated


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_real_server_never_logs_the_token(
    tmp_path: Path, store: InteractionStore, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    env = {"BOTBRIDGE_STATE_DIR": str(tmp_path / "state"), "BOTBRIDGE_HTTP_PORT": str(port)}
    config = load_config(env=env)
    runner = await start_http_server(config, _settings(store))
    try:
        with caplog.at_level(logging.DEBUG):
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/reports"
                async with session.get(url, params={"token": TOKEN}) as response:
                    assert response.status == 200
                # a second server on the same port is refused with a clear message
                with pytest.raises(SystemExit, match=f"cannot listen on 127.0.0.1:{port}"):
                    await start_http_server(config, _settings(store))
    finally:
        await runner.cleanup()
    assert "GET /reports 200" in caplog.text
    assert TOKEN not in caplog.text


def test_chart_of_an_empty_period_says_so() -> None:
    report = build_report([], Period.parse("2024-05-01", "2024-05-03"), "day")
    svg = chart_svg(report.rows)
    ET.fromstring(svg)
    assert "No interactions in this period" in svg
    assert "polyline" not in svg and 'class="bar"' not in svg


def test_chart_thins_out_day_labels() -> None:
    report = build_report([], Period.parse("2024-01-01", "2024-12-31"), "day")
    root = ET.fromstring(chart_svg(report.rows))
    labels = [
        t.text
        for t in root.iter("{http://www.w3.org/2000/svg}text")
        if t.text and t.text[:2].isdigit() and "-" in t.text
    ]
    assert 5 < len(labels) <= 20
