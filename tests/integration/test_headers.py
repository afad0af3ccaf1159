"""Headers that travel, on a real Asterisk 22 with SIPp as carrier and bot.

One stack, two profiles: ``default`` as shipped (no header copied, business_hours alone in
the User-to-User) and ``headers`` (dialled 5558XXX) with an allow-list of carrier headers,
the extra context keys, a verstat header and ``max_bot_seconds``. Each test sends the
carrier's INVITE with the headers of the case and looks at the bot's INVITE, the app's
log and the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import first, queued_caller, until
from tests.integration.test_call_flow import SEED_ESCALATION_HEX
from tests.integration.test_metrics import scrape
from tests.webhook_receiver import SECRET, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

HEADERS_SERVICE = "5558001"
TIME_LIMIT_SERVICE = "5559001"
MAX_HEADER_BYTES = 128
MAX_BOT_SECONDS = 2
CALL_TIMEOUT = 30
ALLOWED = ("Diversion", "X-Carrier-Case", "X-Big", "X-Utf", "X-Ctl")
DIVERSION = "<sip:+15550009999@carrier.example>;reason=unconditional;counter=1"
DIGEST_SERVICE = "5557001"
HANDING_SERVICE = "5556001"
BOT_HEADERS = ("X-Case-Id", "X-Transfer-Summary", "X-Big-Summary", "X-Utf")
# what tests/scenarios/bot_digest/bot.xml accepts (a ';' in the password: escaped in pjsip.conf)
DIGEST_USER = "botbridge-test"
DIGEST_PASSWORD = "digest;secret-42"


@pytest.fixture(scope="module")
def digest_bot_port() -> int:
    return free_port(udp_too=True)


@pytest.fixture(scope="module")
def webhook_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def headers_stack(
    runtime: Runtime,
    tmp_path_factory: pytest.TempPathFactory,
    digest_bot_port: int,
    webhook_port: int,
) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-headers-{tmp_path_factory.getbasetemp().name}"
    root.mkdir(parents=True, exist_ok=True)
    password_file = root / "digest-bot-password"
    password_file.write_text(DIGEST_PASSWORD + "\n")
    profile = (
        'bot_endpoint = "voicebot"\nanswer_timeout_seconds = 4\nfallback_queue = "agents-queue"\n'
        'default_queue = "agents-queue"\navailability_queue = "agents-queue"\n'
    )
    config = root / "headers.toml"
    config.write_text(
        # availability read for every call: the ARI request count per call is exact
        f"[bridge]\nmax_header_bytes = {MAX_HEADER_BYTES}\navailability_cache_seconds = 0\n"
        f"[profiles.headers]\n{profile}"
        f"carrier_headers = {list(ALLOWED)!r}\n".replace("'", '"')
        + 'context_keys = ["dialled", "caller", "verstat"]\nverstat_header = "X-Verstat"\n'
        f"[profiles.limited]\n{profile}max_bot_seconds = {MAX_BOT_SECONDS}\n"
        f"[profiles.digest]\n{profile}"
        f'[[profiles.digest.bots]]\nuri = "sip:digestbot@127.0.0.1:{digest_bot_port}"\n'
        f'auth_username = "{DIGEST_USER}"\nauth_password_file = "{password_file}"\n'
        '[[routes]]\npattern = "_5557XXX"\nprofile = "digest"\n'
        f"[profiles.handing]\n{profile}"
        f"bot_headers = {list(BOT_HEADERS)!r}\n".replace("'", '"')
        + '[[routes]]\npattern = "_5556XXX"\nprofile = "handing"\n'
        f'[webhooks]\nurls = ["http://127.0.0.1:{webhook_port}/hook"]\n'
        "backoff_initial_seconds = 0.2\nbackoff_max_seconds = 1.0\npoll_interval_seconds = 0.2\n"
        '[[routes]]\npattern = "_5558XXX"\nprofile = "headers"\n'
        '[[routes]]\npattern = "_5559XXX"\nprofile = "limited"\n'
        '[[routes]]\npattern = "_X."\nprofile = "default"\n'
    )
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": str(config),
            "BOTBRIDGE_WEBHOOK_SECRET": SECRET.decode(),
        },
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def checked_stack(headers_stack: DevStack) -> DevStack:
    return headers_stack


def carrier(stack: DevStack, service: str, headers: list[str] | None = None) -> SippRun:
    """The carrier calling ``service`` from 15550001111 (with ``headers`` on its INVITE),
    waiting for the far end's BYE."""
    if headers is None:
        scenario, keys = "common/caller_waits", {}
    else:
        scenario, keys = "carrier_headers/caller", {"carrier_headers": "\r\n".join(headers)}
    return stack.sipp().start(
        scenario,
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=service,
        keys={"caller_number": "15550001111", **keys},
    )


def call(stack: DevStack, service: str, headers: list[str], bot_ms: int = 500) -> SippRun:
    """A carrier call to ``service`` with ``headers`` on its INVITE, taken by a bot that
    talks ``bot_ms`` and hangs up; both parties finished. The bot's run is returned."""
    sipp = stack.sipp()
    bot = sipp.start("bot_resolves/bot", local_port=stack.bot_port, extra=["-d", str(bot_ms)])
    caller = carrier(stack, service, headers)
    for run in (caller, bot):
        run.wait(CALL_TIMEOUT)
    assert caller.returncode == 0, caller.report() + bot.report()
    return bot


def uui_text(invite_uui: str | None) -> str:
    data, _, params = (invite_uui or "").partition(";")
    assert params == "encoding=hex", invite_uui
    return bytes.fromhex(data).decode()


async def ended_record(stack: DevStack, interaction_id: str) -> Record:
    def ended() -> Record | None:
        store = InteractionStore(stack.config.store.url)
        try:
            row = store.get(interaction_id)
        finally:
            store.close()
        return row if row is not None and row["ended_at"] else None

    return await until(ended, 10, f"record {interaction_id} ended")


async def test_allowed_carrier_headers_reach_the_bot_and_no_others(
    headers_stack: DevStack,
) -> None:
    pai = "<sip:+15550001111;verstat=TN-Validation-Passed@carrier.example;user=phone>"
    bot = call(
        headers_stack,
        HEADERS_SERVICE,
        [
            f"Diversion: {DIVERSION}",
            "X-Carrier-Case: case-4711",
            "X-Not-Listed: secret",
            f"P-Asserted-Identity: {pai}",
        ],
    )
    invite = first(bot, method="INVITE", direction="received")
    assert bot.returncode == 0, bot.report()
    assert invite.header("Diversion") == DIVERSION
    assert invite.header("X-Carrier-Case") == "case-4711"
    # not on the allow-list: neither the stranger nor the P-Asserted-Identity it was read from
    assert invite.header("X-Not-Listed") is None
    assert invite.header("P-Asserted-Identity") is None
    assert invite.header("X-Verstat") == "TN-Validation-Passed"
    assert uui_text(invite.header("User-to-User")) == (
        f"business_hours=available;dialled={HEADERS_SERVICE};caller=15550001111;"
        "verstat=TN-Validation-Passed"
    )
    iid = invite.header("X-Interaction-Id")
    assert iid
    row = await ended_record(headers_stack, iid)
    assert row["verstat"] == "TN-Validation-Passed" and row["outcome"] == "resolved"


async def test_the_default_profile_copies_nothing_and_keeps_the_seed_uui(
    headers_stack: DevStack,
) -> None:
    pai = "<sip:+15550001111;verstat=TN-Validation-Failed@carrier.example;user=phone>"
    bot = call(
        headers_stack,
        "5551000",
        [f"Diversion: {DIVERSION}", f"P-Asserted-Identity: {pai}"],
    )
    invite = first(bot, method="INVITE", direction="received")
    assert invite.header("Diversion") is None and invite.header("X-Verstat") is None
    assert uui_text(invite.header("User-to-User")) == "business_hours=available"
    iid = invite.header("X-Interaction-Id")
    assert iid
    # read and recorded all the same: the record and the reports count every profile's calls
    assert (await ended_record(headers_stack, iid))["verstat"] == "TN-Validation-Failed"


@pytest.mark.parametrize(
    ("headers", "verstat"),
    [
        (
            ["P-Asserted-Identity: <tel:+15550001111;verstat=TN-Validation-Passed>"],
            "TN-Validation-Passed",
        ),
        (
            ["P-Asserted-Identity: <sip:+15550001111;verstat=TN-Validation-Failed@c.example>"],
            "TN-Validation-Failed",
        ),
        (["P-Asserted-Identity: <sip:+15550001111@c.example>"], "absent"),
        ([], "absent"),
    ],
    ids=["passed", "failed", "pai-without-verstat", "no-pai"],
)
async def test_verstat_reaches_the_bot_and_the_record(
    headers_stack: DevStack, headers: list[str], verstat: str
) -> None:
    bot = call(headers_stack, HEADERS_SERVICE, ["X-Carrier-Case: v", *headers])
    invite = first(bot, method="INVITE", direction="received")
    assert invite.header("X-Verstat") == verstat
    assert uui_text(invite.header("User-to-User")).endswith(f";verstat={verstat}")
    iid = invite.header("X-Interaction-Id")
    assert iid
    assert (await ended_record(headers_stack, iid))["verstat"] == verstat


async def test_unsafe_carrier_values_are_refused_and_logged(headers_stack: DevStack) -> None:
    """Over max_header_bytes, non-ASCII, a control character: not copied, each logged with
    its reason (never its value); the other allowed header is copied all the same. A folded
    header (CRLF + space) arrives unfolded: Asterisk's parser joins it before anyone sees
    it, so no CR or LF can reach the bot's INVITE from the carrier."""
    offset = len(headers_stack.app_log_text())
    big = "b" * (MAX_HEADER_BYTES + 1)
    bot = call(
        headers_stack,
        HEADERS_SERVICE,
        [
            f"X-Big: {big}",
            "X-Utf: caf\u00e9",
            "X-Ctl: a\x01b",
            "X-Carrier-Case: folded\r\n  line",
        ],
    )
    invite = first(bot, method="INVITE", direction="received")
    for name in ("X-Big", "X-Utf", "X-Ctl"):
        assert invite.header(name) is None, invite.describe()
    assert invite.header("X-Carrier-Case") == "folded line"
    log = headers_stack.app_log_text()[offset:]
    for name, reason in (
        ("X-Big", "header_too_large"),
        ("X-Utf", "header_not_ascii"),
        ("X-Ctl", "header_control_chars"),
    ):
        assert f"carrier header {name} not used: {reason}" in log, log[-3000:]
    assert big not in log and "caf" not in log


async def test_max_bot_seconds_moves_the_caller_to_the_fallback_queue(
    headers_stack: DevStack,
) -> None:
    """The bot would talk 20 s; after max_bot_seconds the app hangs it up and the caller
    goes to the fallback queue, recorded bot_failed with the reason."""
    sipp = headers_stack.sipp()
    agent = sipp.start("common/agent", local_port=headers_stack.agent_port, extra=["-d", "1000"])
    bot = sipp.start("bot_resolves/bot", local_port=headers_stack.bot_port, extra=["-d", "20000"])
    caller = carrier(headers_stack, TIME_LIMIT_SERVICE)
    async with headers_stack.rest() as ari:
        queued = await until(lambda: queued_caller(ari), 15, "the caller in Queue()")
        error = await ari.get_var(queued.id, "BOTBRIDGE_ERROR")
    for run in (caller, agent):
        run.wait(CALL_TIMEOUT)
    bot.stop()
    assert error == "max_bot_seconds"
    invite = first(bot, method="INVITE", direction="received")
    iid = invite.header("X-Interaction-Id")
    assert iid
    assert first(bot, method="BYE", direction="received")
    row = await ended_record(headers_stack, iid)
    assert row["outcome"] == "bot_failed" and row["error_reason"] == "max_bot_seconds"
    assert row["queue"] == "agents-queue" and row["agent_answered_at"]
    assert row["bot_answered_at"] and row["bot_ended_at"]
    held = row["bot_ended_at"] - row["bot_answered_at"]
    assert MAX_BOT_SECONDS - 0.5 <= held < MAX_BOT_SECONDS + 2, held


async def test_a_bot_that_challenges_with_401_is_reached_with_digest(
    headers_stack: DevStack, digest_bot_port: int
) -> None:
    """The bot answers the first INVITE 401 (Digest, realm bot.example) and takes the second
    only with the right credentials (SIPp verifyauth), else 403: the call reaching the bot
    and being resolved by it shows that Asterisk answered the challenge correctly."""
    sipp = headers_stack.sipp()
    bot = sipp.start("bot_digest/bot", local_port=digest_bot_port, extra=["-d", "500"])
    caller = carrier(headers_stack, DIGEST_SERVICE)
    for run in (caller, bot):
        run.wait(CALL_TIMEOUT)
    assert bot.returncode == 0 and caller.returncode == 0, bot.report() + caller.report()
    invites = [m for m in bot.messages() if m.method == "INVITE" and m.direction == "received"]
    assert len(invites) == 2, bot.report()
    assert invites[0].header("Authorization") is None
    authorization = invites[1].header("Authorization") or ""
    assert authorization.startswith("Digest ") and f'username="{DIGEST_USER}"' in authorization
    assert 'realm="bot.example"' in authorization
    assert DIGEST_PASSWORD not in authorization
    assert first(bot, status=200, direction="sent", cseq="INVITE")
    iid = invites[1].header("X-Interaction-Id")
    assert iid
    row = await ended_record(headers_stack, iid)
    assert row["outcome"] == "resolved" and row["bot_answered_at"]
    assert row["bot_uri"] == f"sip:digestbot@127.0.0.1:{digest_bot_port}"


async def test_copying_carrier_headers_costs_no_ari_request(headers_stack: DevStack) -> None:
    """The same call, with the same carrier headers, to the default profile (nothing copied)
    and to the profile that copies them, its context keys and its verstat header: both cost
    the same number of ARI requests (botbridge_ari_requests; 8 each, measured)."""
    sent = [
        f"Diversion: {DIVERSION}",
        "X-Carrier-Case: measured",
        "P-Asserted-Identity: <tel:+15550001111;verstat=TN-Validation-Passed>",
    ]
    spent: dict[str, float] = {}
    for service in ("5551000", HEADERS_SERVICE):
        before = (await scrape(headers_stack))[("botbridge_ari_requests_total", ())]
        bot = call(headers_stack, service, sent)
        iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
        assert iid
        await ended_record(headers_stack, iid)
        after = (await scrape(headers_stack))[("botbridge_ari_requests_total", ())]
        spent[service] = after - before
    copied = first(bot, method="INVITE", direction="received")
    assert copied.header("Diversion") == DIVERSION  # the second call did copy them
    assert spent["5551000"] == spent[HEADERS_SERVICE], spent


async def test_the_bots_allowed_refer_headers_reach_the_agent_the_record_and_the_webhook(
    headers_stack: DevStack, webhook_port: int
) -> None:
    """The bot REFERs with its own headers: the profile's bot_headers reach the agent's
    INVITE unchanged, the record and the escalation webhook; a header not listed does not,
    nor an oversize (over max_context_bytes) or non-ASCII value, each logged with why."""
    receiver = Receiver(webhook_port)
    await receiver.start()
    try:
        offset = len(headers_stack.app_log_text())
        summary = 'Refund for order A-1, "urgent"; caller verified: yes (PIN)'
        big = "s" * 257
        sipp = headers_stack.sipp()
        agent = sipp.start("common/agent", local_port=headers_stack.agent_port, extra=["-d", "500"])
        bot = sipp.start(
            "escalate_bot_headers/bot",
            local_port=headers_stack.bot_port,
            keys={
                "refer_user": "escalation",
                "refer_uui": SEED_ESCALATION_HEX + ";encoding=hex",
                "refer_extra": "\r\n".join(
                    [
                        "X-Case-Id: case-77",
                        f"X-Transfer-Summary: {summary}",
                        "X-Not-Listed: nope",
                        f"X-Big-Summary: {big}",
                        "X-Utf: r\u00e9sum\u00e9",
                    ]
                ),
            },
            extra=["-d", "500"],
        )
        caller = carrier(headers_stack, HANDING_SERVICE)
        for run in (caller, bot, agent):
            run.wait(CALL_TIMEOUT)
            assert run.returncode == 0, run.report()
        invite = first(agent, method="INVITE", direction="received")
        assert invite.header("X-Case-Id") == "case-77"
        assert invite.header("X-Transfer-Summary") == summary
        for name in ("X-Not-Listed", "X-Big-Summary", "X-Utf"):
            assert invite.header(name) is None, invite.describe()
        iid = invite.header("X-Interaction-Id")
        assert iid
        expected = {"X-Case-Id": "case-77", "X-Transfer-Summary": summary}
        row = await ended_record(headers_stack, iid)
        assert row["outcome"] == "escalated"
        assert json.loads(row["bot_headers"] or "null") == expected
        post = await until(lambda: receiver.posts, 15, "the escalation webhook")
        assert post[0]["body"]["interaction_id"] == iid
        assert post[0]["body"]["bot_headers"] == expected
        log = headers_stack.app_log_text()[offset:]
        assert "bot header X-Big-Summary not used: header_too_large" in log, log[-3000:]
        assert "bot header X-Utf not used: header_not_ascii" in log, log[-3000:]
        assert big not in log
    finally:
        await receiver.stop()
