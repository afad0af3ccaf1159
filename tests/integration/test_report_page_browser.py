"""The /reports page rendered by a real browser (headless Chromium) from a real server.

The screenshot must have the window's size and show the page: many colours, not one flat
background, and the chart's bar and line colours. PNG decoding uses only the standard
library. Set BOTBRIDGE_SCREENSHOT_DIR to keep a copy of the screenshot.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ari_app.config import load_config
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.report_html import BAR_COLOUR, LINE_COLOUR
from ari_app.reporting.web import WebSettings, start_http_server, store_records
from ari_app.store import InteractionStore
from devtools.stack import free_port
from tests.records import create, update
from tests.tools import require_tool

# headless and offline: no sandbox (root in CI), no GPU, no network side traffic
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
)
pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 1200, 900
TOKEN = "browser-test-token"
FIRST_DAY = datetime(2024, 5, 1, tzinfo=UTC)
DAYS = 14
BROWSER_TIMEOUT = 120
MIN_COLOURS = 50


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit, non-interlaced RGB or RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat = 8, b""
    width = height = depth = colour_type = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type)
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % bpp < 3) for r in rows]


def _rgb(hex_colour: str) -> bytes:
    return bytes.fromhex(hex_colour.lstrip("#"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InteractionStore]:
    store = InteractionStore(tmp_path / "interactions.sqlite3")
    n = 0
    for day in range(DAYS):
        base = (FIRST_DAY + timedelta(days=day, hours=9)).timestamp()
        # a varied fortnight: more calls mid-week, some days without escalations
        outcomes = ["resolved"] * (3 + day % 4) + ["escalated"] * (day % 3)
        outcomes += ["bot_failed"] * (day % 5 == 0) + ["abandoned"] * (day % 4 == 1)
        for outcome in outcomes:
            n += 1
            start = base + 120 * n
            iid = f"call{n}"
            create(store, iid, profile="default" if n % 3 else "sales", caller_channel=iid,
                         started_at=start)  # fmt: skip
            update(
                store,
                iid,
                state=outcome,
                outcome=outcome,
                queue="agents-queue" if outcome in {"escalated", "bot_failed"} else None,
                escalate_to=("billing" if n % 2 else "agents-queue")
                if outcome == "escalated"
                else None,
                bot_answered_at=None if outcome == "bot_failed" else start + 1,
                transfer_at=start + 50 if outcome == "escalated" else None,
                ended_at=start + 95,
            )
    yield store
    store.close()


async def test_report_page_renders_in_chromium(tmp_path: Path, store: InteractionStore) -> None:
    browser_path = require_tool("chromium")
    port = free_port()
    config = load_config(
        env={"BOTBRIDGE_STATE_DIR": str(tmp_path / "state"), "BOTBRIDGE_HTTP_PORT": str(port)}
    )
    settings = WebSettings(
        token=TOKEN,
        records=store_records(store),
        tz=UTC,
        max_concurrent_reports=config.http.max_concurrent_reports,
        metrics=Metrics(process=False),
        metrics_public=True,
    )
    runner = await start_http_server(config, settings)
    screenshot = tmp_path / "reports.png"
    last = FIRST_DAY + timedelta(days=DAYS - 1)
    url = (
        f"http://127.0.0.1:{port}/reports?token={TOKEN}"
        f"&from={FIRST_DAY.date()}&to={last.date()}&group_by=profile"
    )
    try:
        browser = await asyncio.create_subprocess_exec(
            browser_path,
            *HEADLESS_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--screenshot={screenshot}",
            f"--window-size={WIDTH},{HEIGHT}",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(browser.communicate(), BROWSER_TIMEOUT)
        except TimeoutError:
            browser.kill()
            await browser.wait()
            raise
    finally:
        await runner.cleanup()
    log = output.decode(errors="replace")
    assert browser.returncode == 0, log
    assert screenshot.is_file(), log
    if os.environ.get("BOTBRIDGE_SCREENSHOT_DIR"):
        shutil.copy(screenshot, Path(os.environ["BOTBRIDGE_SCREENSHOT_DIR"]) / screenshot.name)

    width, height, rows = read_png(screenshot)
    assert (width, height) == (WIDTH, HEIGHT)
    pixels: Counter[bytes] = Counter()
    for row in rows:
        pixels.update(row[i : i + 3] for i in range(0, len(row), 3))
    assert len(pixels) > MIN_COLOURS, f"only {len(pixels)} colours: a blank page?"
    background_share = pixels.most_common(1)[0][1] / (width * height)
    assert background_share < 0.9, f"{background_share:.0%} of the page is one colour"
    # the chart was drawn: its bars and its line's points are there
    assert pixels[_rgb(BAR_COLOUR)] > 200, "no escalation bars in the screenshot"
    assert pixels[_rgb(LINE_COLOUR)] > 100, "no containment line in the screenshot"
