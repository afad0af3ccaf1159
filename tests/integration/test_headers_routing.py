"""More headers that travel, on a real Asterisk 22 with SIPp: the default queue's live figures
in the bot's User-to-User, a failed caller verification routed to another profile's bot,
and the bot's own headers taken from its BYE's context onto the agent's INVITE.

One stack, [bye_context] on, profiles by dialled number: ``figures`` (5553XXX, default_queue
agents-queue with the shipped agent1 in it) and ``nobody`` (5552XXX, default_queue a queue
without members) add ``agents_available`` and ``estimated_wait``; ``checked`` (5554XXX)
hands calls whose verstat failed to ``unverified``, whose bot listens on a port of its own;
``byeheaders`` (5556XXX) copies the bot's headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ari_app.ari import AriRest
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import first, sipp_finished, until
from tests.integration.test_call_flow import decode_uui_header
from tests.integration.test_handoff import bot_invites, refer_headers
from tests.integration.test_headers import CALL_TIMEOUT, call, carrier, ended_record, uui_text
from tests.integration.test_metrics import scrape
from tests.webhook_receiver import SECRET, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

FIGURES_SERVICE = "5553001"
NOBODY_SERVICE = "5552001"
CHECKED_SERVICE = "5554001"
BYE_HEADERS_SERVICE = "5556001"
RETURNING_SERVICE = "5557001"
CLOSED_QUEUE = "closed-queue"
AGENT1_PAUSED = "QUEUE_MEMBER(agents-queue,paused,PJSIP/agent1)"
RETURNING_BOT_TALK_MS = 3000
FIGURE_KEYS = '["agents_available", "estimated_wait"]'
BOT_HEADERS = ("X-Case-Id", "X-Big-Summary", "X-Utf")
MAX_CONTEXT_BYTES = 256
# a header no profile copies: the carrier scenario takes at least one
PLAIN = ["X-Test-Call: plain"]


@pytest.fixture(scope="module")
def other_bot_port() -> int:
    return free_port(udp_too=True)


@pytest.fixture(scope="module")
def webhook_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def routing_stack(
    runtime: Runtime,
    tmp_path_factory: pytest.TempPathFactory,
    other_bot_port: int,
    webhook_port: int,
) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-headers-routing-{tmp_path_factory.getbasetemp().name}"
    root.mkdir(parents=True, exist_ok=True)
    profile = (
        'bot_endpoint = "voicebot"\nanswer_timeout_seconds = 4\nfallback_queue = "agents-queue"\n'
        'availability_queue = "agents-queue"\n'
    )
    config = root / "routing.toml"
    config.write_text(
        # availability read for every call: the ARI request count per call is exact
        f"[bridge]\nmax_context_bytes = {MAX_CONTEXT_BYTES}\navailability_cache_seconds = 0\n"
        f"[bye_context]\nenabled = true\ncapture_port = {free_port(udp_too=True)}\n"
        "[queues.empty-queue]\n"
        # strict join_empty, no member: a caller sent there is back at once (JOINEMPTY)
        f'[queues.{CLOSED_QUEUE}]\njoin_empty = "unavailable,invalid,unknown"\n'
        '[routing]\nagents-queue = "agents-queue"\nbilling = "billing-queue"\n'
        f'closed = "{CLOSED_QUEUE}"\n'
        f'[profiles.returning]\n{profile}default_queue = "agents-queue"\n'
        f"context_keys = {FIGURE_KEYS}\nmax_escalation_returns = 1\n"
        f'[profiles.figures]\n{profile}default_queue = "agents-queue"\n'
        f"context_keys = {FIGURE_KEYS}\n"
        f'[profiles.nobody]\n{profile}default_queue = "empty-queue"\n'
        f"context_keys = {FIGURE_KEYS}\n"
        f'[profiles.checked]\n{profile}default_queue = "agents-queue"\n'
        'on_verstat_failed = "unverified"\n'
        'verstat_failed = ["TN-Validation-Failed", "No-TN-Validation"]\n'
        f'[profiles.unverified]\n{profile}default_queue = "agents-queue"\n'
        f'bot_uri = "sip:otherbot@127.0.0.1:{other_bot_port}"\n'
        f'[profiles.byeheaders]\n{profile}default_queue = "agents-queue"\n'
        f"bot_headers = {list(BOT_HEADERS)!r}\n".replace("'", '"')
        + f'[webhooks]\nurls = ["http://127.0.0.1:{webhook_port}/hook"]\n'
        "backoff_initial_seconds = 0.2\nbackoff_max_seconds = 1.0\npoll_interval_seconds = 0.2\n"
        '[[routes]]\npattern = "_5553XXX"\nprofile = "figures"\n'
        '[[routes]]\npattern = "_5552XXX"\nprofile = "nobody"\n'
        '[[routes]]\npattern = "_5554XXX"\nprofile = "checked"\n'
        '[[routes]]\npattern = "_5556XXX"\nprofile = "byeheaders"\n'
        '[[routes]]\npattern = "_5557XXX"\nprofile = "returning"\n'
        '[[routes]]\npattern = "_X."\nprofile = "default"\n'
    )
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config), "BOTBRIDGE_WEBHOOK_SECRET": SECRET.decode()},
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def checked_stack(routing_stack: DevStack) -> DevStack:
    return routing_stack


def uui_pairs(bot: SippRun) -> dict[str, str]:
    text = uui_text(first(bot, method="INVITE", direction="received").header("User-to-User"))
    return dict(pair.split("=", 1) for pair in text.split(";"))


async def test_the_default_queues_figures_reach_the_bot(routing_stack: DevStack) -> None:
    """agents-queue has the shipped agent1 (a static member, idle): one agent ready; the
    empty queue none. business_hours stays first; estimated_wait is app_queue's average
    hold time, whole seconds."""
    with_agent = call(routing_stack, FIGURES_SERVICE, PLAIN)
    text = uui_text(first(with_agent, method="INVITE", direction="received").header("User-to-User"))
    assert text.startswith("business_hours=available;agents_available=1;estimated_wait="), text
    assert uui_pairs(with_agent)["estimated_wait"].isdigit(), text
    without = uui_pairs(call(routing_stack, NOBODY_SERVICE, PLAIN))
    assert list(without) == ["business_hours", "agents_available", "estimated_wait"]
    assert without["agents_available"] == "0" and without["estimated_wait"].isdigit(), without
    # the default profile asks for none: the seed's User-to-User
    assert uui_pairs(call(routing_stack, "5551000", PLAIN)) == {"business_hours": "available"}


async def test_the_queue_figures_cost_no_ari_request(routing_stack: DevStack) -> None:
    """The same call to the default profile and to the one with the queue figures: the same
    number of ARI requests (botbridge_ari_requests; 9 each here, measured: the 8 of
    test_headers' stack and, with [bye_context], the read of the bot dialog's Call-ID)."""
    spent: dict[str, float] = {}
    for service in ("5551000", FIGURES_SERVICE):
        before = (await scrape(routing_stack))[("botbridge_ari_requests_total", ())]
        bot = call(routing_stack, service, PLAIN)
        iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
        assert iid
        await ended_record(routing_stack, iid)
        after = (await scrape(routing_stack))[("botbridge_ari_requests_total", ())]
        spent[service] = after - before
    assert "agents_available" in uui_pairs(bot)  # the second call did carry them
    assert spent["5551000"] == spent[FIGURES_SERVICE], spent


async def test_a_returned_callers_bot_is_told_the_figures_as_they_are_then(
    routing_stack: DevStack,
) -> None:
    """agent1 paused when the call comes in: the first bot hears agents_available=0. It is
    back before the bot escalates to a queue that turns the caller away (JOINEMPTY): the
    returned dialog hears agents_available=1, the figures the dialplan read as the caller
    came back from the queue, not those of the call's start (business_hours stays as the
    first dialog was told it)."""
    sipp = routing_stack.sipp()
    agent = sipp.start("common/agent", local_port=routing_stack.agent_port, extra=["-d", "500"])
    bot = sipp.start(
        "handoff/bot",
        local_port=routing_stack.bot_port,
        keys={
            "refer_user": "escalation",
            "refer_headers": refer_headers("closed"),
            "return_refer_headers": refer_headers("agents-queue"),
        },
        calls=2,
        extra=["-d", str(RETURNING_BOT_TALK_MS)],
    )
    async with routing_stack.rest() as ari:
        await ari.post("/asterisk/variable", params={"variable": AGENT1_PAUSED, "value": "1"})
        try:
            caller = carrier(routing_stack, RETURNING_SERVICE)
            await until(lambda: bot_talking(ari), 15, "the first bot answered")
        finally:
            await ari.post("/asterisk/variable", params={"variable": AGENT1_PAUSED, "value": "0"})
    for run in (caller, bot, agent):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    first_dialog, returned = (uui_text(m.header("User-to-User")) for m in bot_invites(bot))
    # business_hours says busy (agent1 logged in but paused), as the first dialog was told
    assert first_dialog.startswith("business_hours=busy;agents_available=0;"), first_dialog
    assert returned.startswith(
        "business_hours=busy;escalation=failed;reason=no_agents;"
        f"queue={CLOSED_QUEUE};agents_available=1;estimated_wait="
    ), returned


async def bot_talking(ari: AriRest) -> bool:
    """The call's bot leg has answered."""
    return any(c.id.startswith("bot-") and c.state == "Up" for c in await ari.channels())


@pytest.mark.parametrize(
    ("verstat", "profile"),
    [
        ("TN-Validation-Passed", "checked"),
        ("TN-Validation-Failed", "unverified"),
        ("TN-Validation-Failed-A", "unverified"),
        ("No-TN-Validation", "unverified"),
    ],
)
async def test_a_failed_verification_goes_to_the_other_profiles_bot(
    routing_stack: DevStack, other_bot_port: int, verstat: str, profile: str
) -> None:
    """Both bots listen; the call reaches the bot of the profile its verstat decides (the
    other gets no INVITE), and the record names that profile."""
    sipp = routing_stack.sipp()
    bots = {
        "checked": sipp.start(
            "bot_resolves/bot", local_port=routing_stack.bot_port, extra=["-d", "500"]
        ),
        "unverified": sipp.start(
            "bot_resolves/bot", local_port=other_bot_port, extra=["-d", "500"]
        ),
    }
    pai = f"P-Asserted-Identity: <sip:+15550001111;verstat={verstat}@carrier.example>"
    caller = carrier(routing_stack, CHECKED_SERVICE, [pai])
    reached, idle = bots[profile], next(b for name, b in bots.items() if name != profile)
    for run in (caller, reached):
        run.wait(CALL_TIMEOUT)
        assert run.returncode == 0, run.report()
    idle.stop()
    assert not [m for m in idle.messages() if m.method == "INVITE"], idle.report()
    iid = first(reached, method="INVITE", direction="received").header("X-Interaction-Id")
    assert iid
    row = await ended_record(routing_stack, iid)
    assert row["profile"] == profile and row["outcome"] == "resolved"
    assert row["verstat"] == verstat


async def test_the_bots_allowed_bye_headers_reach_the_agent_the_record_and_the_webhook(
    routing_stack: DevStack, webhook_port: int
) -> None:
    """The bot hangs up with escalate_to on its BYE and headers of its own: the listed one
    reaches the agent's INVITE, the record and the webhook; one not listed does not, nor an
    oversize or non-ASCII value of a listed one, each logged with why."""
    receiver = Receiver(webhook_port)
    await receiver.start()
    try:
        offset = len(routing_stack.app_log_text())
        big = "s" * (MAX_CONTEXT_BYTES + 1)
        sipp = routing_stack.sipp()
        agent = sipp.start("common/agent", local_port=routing_stack.agent_port, extra=["-d", "500"])
        bot = sipp.start(
            "bye_context_headers/bot",
            local_port=routing_stack.bot_port,
            keys={
                "bye_uui": b"escalate_to=billing".hex() + ";encoding=hex",
                "bye_extra": "\r\n".join(
                    [
                        "X-Case-Id: case-88",
                        "X-Not-Listed: nope",
                        f"X-Big-Summary: {big}",
                        "X-Utf: r\u00e9sum\u00e9",
                    ]
                ),
            },
            extra=["-d", "1000"],
        )
        caller = carrier(routing_stack, BYE_HEADERS_SERVICE)
        for run in (caller, bot, agent):
            await sipp_finished(run, CALL_TIMEOUT)
            assert run.wait(1) == 0, run.report()
        invite = first(agent, method="INVITE", direction="received")
        assert decode_uui_header(invite.header("User-to-User") or "") == "escalate_to=billing"
        assert invite.header("X-Case-Id") == "case-88"
        for name in ("X-Not-Listed", "X-Big-Summary", "X-Utf"):
            assert invite.header(name) is None, invite.describe()
        iid = invite.header("X-Interaction-Id")
        assert iid
        row = await ended_record(routing_stack, iid)
        assert row["outcome"] == "escalated" and row["queue"] == "billing-queue"
        assert json.loads(row["bot_headers"] or "null") == {"X-Case-Id": "case-88"}
        # other escalations of this stack may be delivered too: their sender retries
        post = await until(
            lambda: [p for p in receiver.posts if p["body"]["interaction_id"] == iid],
            15,
            "the escalation webhook",
        )
        assert post[0]["body"]["bot_headers"] == {"X-Case-Id": "case-88"}
        log = routing_stack.app_log_text()[offset:]
        assert "bot header X-Big-Summary not used: header_too_large" in log, log[-3000:]
        assert "bot header X-Utf not used: header_not_ascii" in log, log[-3000:]
        assert big not in log
    finally:
        await receiver.stop()
