"""Several bots per profile, on a real Asterisk 22 with SIPp as caller, bots and agent.

One stack, one profile per case (routed by the dialled number), every bot a SIPp party on
its own free port: a bot that answers 503, a bot URI nothing listens on (probed with SIP
OPTIONS, so Asterisk marks it unreachable), bots that answer. The tests assert on what the
bots received (INVITEs and their timing), on where the caller went and on the records.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import all_of, first, load_callers, queued_caller, until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

TOKEN = "bot-failover-test-token"
# the failover profile: the whole attempt sequence within 8 s, one attempt at most 4 s
ANSWER_TIMEOUT = 8
ATTEMPT_TIMEOUT = 4
PROBE_SECONDS = 2
AB_CALLS = 100
AB_RATE = 10


@dataclass
class Bots:
    """The bot URIs of the stack's profiles, by role."""

    rejecting: str  # answers every INVITE with 503
    live: str  # answers (failover and dead-first profiles)
    dead: str  # nothing listens; probed with OPTIONS
    rejecting_too: str  # a second 503 bot (both-dead profile)
    limited: str  # max_concurrent_calls = 2
    overflow: str  # takes what the limited bot may not
    arm_a: str  # A/B split, weight 50
    arm_b: str  # A/B split, weight 50
    silent: str  # rings, never answers
    silent_too: str  # rings, never answers


def _uri(name: str, port: int) -> str:
    return f"sip:{name}@127.0.0.1:{port}"


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


def _profile(name: str, bots: str, **extra: object) -> str:
    lines = [
        f"[profiles.{name}]",
        'bot_endpoint = "voicebot"',
        f"answer_timeout_seconds = {ANSWER_TIMEOUT}",
        f"attempt_timeout_seconds = {ATTEMPT_TIMEOUT}",
        'fallback_queue = "agents-queue"',
        'default_queue = "agents-queue"',
        'availability_queue = "agents-queue"',
        *(f"{k} = {v}" for k, v in extra.items()),
        bots,
    ]
    return "\n".join(lines) + "\n"


def _bot(profile: str, uri: str, **extra: object) -> str:
    fields = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return f'[[profiles.{profile}.bots]]\nuri = "{uri}"\n{fields}'


@pytest.fixture(scope="module")
def bots() -> Bots:
    return Bots(*(_uri(n, free_port(udp_too=True)) for n in Bots.__dataclass_fields__))


@pytest.fixture(scope="module")
def multi(
    runtime: Runtime, tmp_path_factory: pytest.TempPathFactory, bots: Bots
) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-bots-{tmp_path_factory.getbasetemp().name}"
    root.mkdir(parents=True, exist_ok=True)
    probed = {"qualify_frequency_seconds": PROBE_SECONDS}
    config = "\n".join(
        [
            "[bot_health]\nqualify_timeout_seconds = 1.0\n",
            _profile("failover", _bot("failover", bots.rejecting) + _bot("failover", bots.live)),
            _profile(
                "deadfirst", _bot("deadfirst", bots.dead, **probed) + _bot("deadfirst", bots.live)
            ),
            _profile(
                "alldead",
                _bot("alldead", bots.dead, **probed) + _bot("alldead", bots.rejecting_too),
            ),
            _profile(
                "limited",
                _bot("limited", bots.limited, max_concurrent_calls=2)
                + _bot("limited", bots.overflow),
            ),
            _profile("ab", _bot("ab", bots.arm_a, weight=50) + _bot("ab", bots.arm_b, weight=50)),
            _profile("silent", _bot("silent", bots.silent) + _bot("silent", bots.silent_too)),
            *(
                f'[[routes]]\npattern = "{pattern}"\nprofile = "{profile}"\n'
                for pattern, profile in (
                    ("_5552XXX", "failover"),
                    ("_5553XXX", "deadfirst"),
                    ("_5554XXX", "alldead"),
                    ("_5555XXX", "limited"),
                    ("_5556XXX", "ab"),
                    ("_5557XXX", "silent"),
                    ("_X.", "default"),
                )
            ),
        ]
    )
    config_file = root / "bots.toml"
    config_file.write_text(config)
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config_file), "BOTBRIDGE_HTTP_TOKEN": TOKEN},
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def checked_stack(multi: DevStack) -> DevStack:
    """``nothing_left_behind`` looks at this module's stack."""
    return multi


def records(stack: DevStack, dialled: str) -> list[Record]:
    store = InteractionStore(stack.config.store.url)
    try:
        return [r for r in store.all() if r["dialled_number"] == dialled]
    finally:
        store.close()


def tried(record: Record) -> list[tuple[str, str | None]]:
    return [(a["uri"], a["result"]) for a in json.loads(record["bots_tried"] or "[]")]


async def metrics(stack: DevStack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{stack.config.http.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def caller(stack: DevStack, service: str, scenario: str = "common/caller_waits") -> SippRun:
    return stack.sipp().start(
        scenario,
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=service,
        keys={"caller_number": "15550001111"},
    )


async def ended(stack: DevStack, dialled: str, count: int) -> list[Record]:
    def done() -> list[Record] | None:
        rows = records(stack, dialled)
        return rows if len(rows) == count and all(r["ended_at"] for r in rows) else None

    return await until(done, 30, f"{count} ended records of calls to {dialled}")


# -- failover ------------------------------------------------------------------------------


async def test_a_bot_answering_503_passes_the_call_to_the_next_bot(
    multi: DevStack, bots: Bots
) -> None:
    sipp = multi.sipp()
    rejecting = sipp.start("bot_rejects/bot_503", local_port=_port(bots.rejecting))
    live = sipp.start("bot_resolves/bot", local_port=_port(bots.live), extra=["-d", "1500"])
    call = caller(multi, "5552000")
    for run in (call, rejecting, live):
        assert run.wait(40) == 0, run.report()

    offered = first(rejecting, method="INVITE", direction="received")
    taken = first(live, method="INVITE", direction="received")
    placed = first(call, method="INVITE", direction="sent")
    iid = offered.header("X-Interaction-Id")
    assert iid and taken.header("X-Interaction-Id") == iid  # the same call, the same headers
    assert taken.header("User-to-User") == offered.header("User-to-User")
    assert first(rejecting, status=503, direction="sent")
    # the caller talked to the second bot, well within the profile's answer timeout
    assert taken.at - placed.at < ANSWER_TIMEOUT, (placed.at, taken.at)
    assert first(call, status=200, direction="received", cseq="INVITE")
    assert first(call, method="BYE", direction="received")  # the second bot resolved it

    (row,) = await ended(multi, "5552000", 1)
    assert row["interaction_id"] == iid
    assert row["outcome"] == "resolved"
    assert row["bot_uri"] == bots.live
    assert tried(row) == [(bots.rejecting, "bot_congestion"), (bots.live, "answered")]
    assert row["bot_channel"] == f"bot-{iid}-2"


async def test_an_unreachable_bot_is_skipped_at_once(multi: DevStack, bots: Bots) -> None:
    dead = ("botbridge_bot_reachable", (("bot", bots.dead),))

    async def marked_dead() -> bool:
        return (await metrics(multi)).get(dead) == 0

    # Asterisk's OPTIONS to the dead URI time out, ContactStatusChange tells the app
    await until(marked_dead, 15, f"{bots.dead} reported unreachable")

    live = multi.sipp().start("bot_resolves/bot", local_port=_port(bots.live), extra=["-d", "1000"])
    call = caller(multi, "5553000")
    for run in (call, live):
        assert run.wait(40) == 0, run.report()
    placed = first(call, method="INVITE", direction="sent")
    taken = first(live, method="INVITE", direction="received")
    # no attempt was spent on the dead bot: the live one is dialled straight away
    assert taken.at - placed.at < 1.5, (placed.at, taken.at)

    (row,) = await ended(multi, "5553000", 1)
    assert row["outcome"] == "resolved"
    assert row["bot_uri"] == bots.live
    assert tried(row) == [(bots.dead, "skipped_unreachable"), (bots.live, "answered")]


async def test_when_every_bot_fails_the_caller_reaches_the_fallback_queue(
    multi: DevStack, bots: Bots
) -> None:
    sipp = multi.sipp()
    agent = sipp.start("common/agent", local_port=multi.agent_port, extra=["-d", "1000"])
    rejecting = sipp.start("bot_rejects/bot_503", local_port=_port(bots.rejecting_too))
    call = caller(multi, "5554000")
    async with multi.rest() as ari:
        queued = await until(lambda: queued_caller(ari), 20, "the caller in Queue()")
        assert (queued.dialplan.app_data or "").startswith("agents-queue,")
        assert await ari.get_var(queued.id, "BOTBRIDGE_OUTCOME") == "bot_failed"
    for run in (call, rejecting, agent):
        assert run.wait(40) == 0, run.report()
    iid = first(rejecting, method="INVITE", direction="received").header("X-Interaction-Id")
    assert first(agent, method="INVITE", direction="received").header("X-Interaction-Id") == iid

    (row,) = await ended(multi, "5554000", 1)
    assert row["outcome"] == "bot_failed"
    assert row["queue"] == "agents-queue"
    assert row["error_reason"] == "bot_congestion"
    assert row["bot_uri"] is None
    assert tried(row) == [
        (bots.dead, "skipped_unreachable"),
        (bots.rejecting_too, "bot_congestion"),
    ]


async def test_bots_that_only_ring_share_the_answer_timeout(multi: DevStack, bots: Bots) -> None:
    sipp = multi.sipp()
    agent = sipp.start("common/agent", local_port=multi.agent_port, extra=["-d", "1000"])
    ringing = [
        sipp.start("bot_no_answer/bot", local_port=_port(uri))
        for uri in (bots.silent, bots.silent_too)
    ]
    call = caller(multi, "5557000")
    async with multi.rest() as ari:
        await until(lambda: queued_caller(ari), 20, "the caller in Queue()")
    for run in (call, *ringing, agent):
        assert run.wait(40) == 0, run.report()
    placed = first(call, method="INVITE", direction="sent").at
    first_invite = first(ringing[0], method="INVITE", direction="received").at
    first_cancel = first(ringing[0], method="CANCEL", direction="received").at
    second_invite = first(ringing[1], method="INVITE", direction="received").at
    second_cancel = first(ringing[1], method="CANCEL", direction="received").at
    queued = first(agent, method="INVITE", direction="received").at
    # the first bot rings for attempt_timeout_seconds, the second for what is left
    assert ATTEMPT_TIMEOUT - 0.5 < first_cancel - first_invite < ATTEMPT_TIMEOUT + 0.5
    assert second_invite - first_cancel < 0.5
    # the whole sequence stays within the answer timeout (ARI dials in whole seconds)
    assert second_cancel - placed < ANSWER_TIMEOUT + 0.5, second_cancel - placed
    assert queued - placed < ANSWER_TIMEOUT + 1.5

    (row,) = await ended(multi, "5557000", 1)
    assert row["outcome"] == "bot_failed"
    assert row["error_reason"] == "bot_noanswer"
    assert tried(row) == [(bots.silent, "bot_noanswer"), (bots.silent_too, "bot_noanswer")]


# -- per-bot limits ------------------------------------------------------------------------


async def test_a_bot_at_its_concurrent_call_limit_passes_the_third_call_on(
    multi: DevStack, bots: Bots
) -> None:
    sipp = multi.sipp()
    limited = sipp.start(
        "load/bot_resolve", local_port=_port(bots.limited), calls=2, extra=["-d", "4000"]
    )
    overflow = sipp.start(
        "load/bot_resolve", local_port=_port(bots.overflow), calls=1, extra=["-d", "4000"]
    )
    callers = load_callers(multi, calls=3, rate=10, prefix="4400", service="5555000")
    active = ("botbridge_bot_active_calls", (("bot", bots.limited),))
    overflowing = ("botbridge_bot_active_calls", (("bot", bots.overflow),))

    async def all_three_up() -> dict[Any, float] | None:
        samples = await metrics(multi)
        return samples if samples.get(overflowing) == 1 else None

    during = await until(all_three_up, 10, "the third call with the overflow bot")
    assert during[active] == 2
    for run in (callers, limited, overflow):
        assert run.wait(40) == 0, run.report()
    assert len(all_of(limited, "INVITE")) == 2
    assert len(all_of(overflow, "INVITE")) == 1

    rows = await ended(multi, "5555000", 3)
    assert Counter(r["bot_uri"] for r in rows) == {bots.limited: 2, bots.overflow: 1}
    (third,) = [r for r in rows if r["bot_uri"] == bots.overflow]
    assert tried(third) == [
        (bots.limited, "skipped_max_concurrent_calls"),
        (bots.overflow, "answered"),
    ]
    assert all(r["outcome"] == "resolved" for r in rows)
    after = await metrics(multi)
    assert after[active] == 0 and after[overflowing] == 0


# -- A/B split -------------------------------------------------------------------------------


async def test_a_fifty_fifty_split_gives_each_bot_calls_and_a_report_row(
    multi: DevStack, bots: Bots
) -> None:
    sipp = multi.sipp()
    arms = [
        sipp.start(
            "load/bot_resolve",
            local_port=_port(uri),
            calls=AB_CALLS,
            extra=["-d", "200"],
            timeout=90,
        )
        for uri in (bots.arm_a, bots.arm_b)
    ]
    callers = load_callers(
        multi, calls=AB_CALLS, rate=AB_RATE, prefix="5500", service="5556000", timeout=90
    )
    try:
        assert callers.wait(90) == 0, callers.report()
    finally:
        for arm in arms:
            arm.stop()
    invites = [len(all_of(arm, "INVITE")) for arm in arms]
    assert sum(invites) == AB_CALLS and min(invites) > 0, invites

    rows = await ended(multi, "5556000", AB_CALLS)
    by_bot = Counter(r["bot_uri"] for r in rows)
    assert by_bot == {bots.arm_a: invites[0], bots.arm_b: invites[1]}
    # a fair 50/50 draw over 100 calls stays within 25..75 with probability > 0.99999
    assert 25 <= by_bot[bots.arm_a] <= 75, by_bot

    today = datetime.now(UTC).date().isoformat()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{multi.config.http.port}/reports.json",
            params={"from": today, "to": today, "group_by": "bot"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
        report = await response.json()
    report_rows = {row["key"]: row for row in report["rows"]}
    for uri in (bots.arm_a, bots.arm_b):
        assert report_rows[uri]["total"] >= by_bot[uri]  # earlier tests' calls may add to it
        assert report_rows[uri]["outcomes"]["resolved"] >= by_bot[uri]
        low, high = report_rows[uri]["containment_ci95"]
        assert 0 <= low <= report_rows[uri]["containment_rate"] <= high <= 1
