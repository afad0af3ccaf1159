"""Metrics and report downloads from the running app, after real calls through Asterisk.

A stack of its own (the app's HTTP server on a free port): a bot escalation must move the
outcome counter and the transfer-handling histogram, show up in /reports.json, and an
Asterisk restart must count as an ARI reconnect.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.stack import free_port
from tests.harness import until
from tests.integration.test_call_flow import SEED_ESCALATION_HEX, final_record, place_call

pytestmark = pytest.mark.integration

TOKEN = "metrics-test-token"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def metered(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-metrics-{tmp_path_factory.getbasetemp().name}"
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_HTTP_PORT": str(free_port()),
            "BOTBRIDGE_HTTP_TOKEN": TOKEN,
            "BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4",
        },
    )
    stack.start()
    yield stack
    stack.stop()


def _base(stack: DevStack) -> str:
    return f"http://127.0.0.1:{stack.config.http.port}"


async def scrape(stack: DevStack) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{_base(stack)}/metrics") as response,
    ):
        assert response.status == 200  # no token: the server is on loopback
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def outcome(samples: Samples, name: str) -> float:
    return samples[("botbridge_call_outcomes_total", (("outcome", name),))]


def value(samples: Samples, name: str) -> float:
    return samples[(name, ())]


async def test_escalation_moves_the_counters(metered: DevStack) -> None:
    before = await scrape(metered)
    assert value(before, "botbridge_ari_connected") == 1
    assert value(before, "botbridge_active_calls") == 0

    call = await place_call(
        metered,
        "escalate/bot",
        bot_keys={
            "refer_user": "escalation",
            "refer_headers": f"?User-to-User={SEED_ESCALATION_HEX}%3Bencoding%3Dhex",
        },
    )
    call.assert_parties_ok()
    await final_record(metered, call.interaction_id, "escalated")

    async def moved() -> Samples | None:
        samples = await scrape(metered)
        done = outcome(samples, "escalated") > outcome(before, "escalated")
        return samples if done and value(samples, "botbridge_active_calls") == 0 else None

    after = await until(moved, 10, "the escalation in /metrics")
    assert outcome(after, "escalated") == outcome(before, "escalated") + 1
    for other in ("resolved", "bot_failed", "abandoned", "error"):
        assert outcome(after, other) == outcome(before, other)
    count = "botbridge_transfer_handling_seconds_count"
    assert value(after, count) == value(before, count) + 1
    handled = value(after, "botbridge_transfer_handling_seconds_sum") - value(
        before, "botbridge_transfer_handling_seconds_sum"
    )
    assert 0 < handled < 5, f"transfer handling took {handled:.3f} s"
    assert value(after, "botbridge_ari_reconnects_total") == 0

    # the same call in the report download
    today = datetime.now(UTC).date().isoformat()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{_base(metered)}/reports.json",
            params={"from": today, "to": today, "group_by": "queue"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
        report = await response.json()
    assert report["total"]["outcomes"]["escalated"] >= 1
    assert report["total"]["escalation_targets"].get("agents-queue", 0) >= 1
    assert "agents-queue" in [row["key"] for row in report["rows"]]


async def test_bot_failure_is_counted(metered: DevStack) -> None:
    before = await scrape(metered)
    call = await place_call(metered, "bot_rejects/bot_486", bot_extra=())
    call.assert_parties_ok()
    await final_record(metered, call.interaction_id, "bot_failed")

    async def counted() -> Samples | None:
        samples = await scrape(metered)
        return samples if outcome(samples, "bot_failed") > outcome(before, "bot_failed") else None

    after = await until(counted, 10, "the bot failure in /metrics")
    assert outcome(after, "bot_failed") == outcome(before, "bot_failed") + 1
    count = "botbridge_transfer_handling_seconds_count"
    assert value(after, count) == value(before, count)  # no REFER, nothing to time


async def test_asterisk_restart_counts_a_reconnect(metered: DevStack) -> None:
    before = await scrape(metered)
    metered.instance.restart()

    async def reconnected() -> Samples | None:
        samples = await scrape(metered)
        more = value(samples, "botbridge_ari_reconnects_total") > value(
            before, "botbridge_ari_reconnects_total"
        )
        return samples if more and value(samples, "botbridge_ari_connected") == 1 else None

    after = await until(reconnected, 30, "an ARI reconnect in /metrics")
    assert value(after, "botbridge_ari_reconnects_total") == (
        value(before, "botbridge_ari_reconnects_total") + 1
    )
