"""Queues, agents and external targets defined only in the TOML file, on a real Asterisk 22
with SIPp as caller, bot, agents, a registering softphone and an existing contact centre.

One stack for the module, configured by a file written before it starts:

- ``support-queue`` (strategy ``linear``) with the static agents alice then bob;
- ``soft-queue`` with carol, a softphone that registers with digest auth from 127.0.0.2;
- ``dyn-queue`` with dave (membership ``dynamic``: logged out until ``ari-app agent login``);
  a caller it cannot serve (no member, or all paused) is a failed escalation, and the
  default profile here overflows (``on_escalation_failure = "overflow"``) to ``agents-queue``;
- the external targets ``acme`` (answers) and ``busyco`` (fails: 486, 603 or no answer;
  the overflow, ``agents-queue``, is where the shipped agent1 answers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import all_of, first, until
from tests.integration.test_call_flow import decode_uui_header, final_record

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_behind")]

TOKEN = "queues-test-token"
SOFTPHONE_SECRET = "carol-digest-secret"
SOFTPHONE_IP = "127.0.0.2"
CALL_TIMEOUT = 40
# how long an agent that must not be rung is watched while the call goes elsewhere
NOT_RUNG_SECONDS = 6
ARI_APP = Path(sys.executable).parent / "ari-app"
RETURN_NUMBER = "5553000"  # the profile whose failed escalations go back to the bot


@dataclass
class Ports:
    agent1: int
    alice: int
    bob: int
    carol: int
    dave: int
    acme: int
    busyco: int


def config_text(ports: Ports) -> str:
    return f"""
[sip]
agent_match = "127.0.0.1,{SOFTPHONE_IP}"

[bridge]
availability_cache_seconds = 0

[profiles.default]
availability_queue = "dyn-queue"
on_escalation_failure = "overflow"
overflow_target = "agents-queue"

# the shipped failure policy: back to the bot (section 14 of docs/call-flows.md)
[profiles.returning]
bot_endpoint = "voicebot"
answer_timeout_seconds = 4
fallback_queue = "agents-queue"
default_queue = "agents-queue"
availability_queue = "agents-queue"

[[routes]]
pattern = "{RETURN_NUMBER}"
profile = "returning"

[[routes]]
pattern = "_X."
profile = "default"

[routing]
agents-queue = "agents-queue"
support = "support-queue"
soft = "soft-queue"
dyn = "dyn-queue"
acme = "acme"
busyco = "busyco"

[queues.support-queue]
strategy = "linear"
timeout_seconds = 10

[queues.soft-queue]

[queues.dyn-queue]
join_empty = "paused,unavailable,invalid"

[agents.agent1]
contact = "sip:agent1@127.0.0.1:{ports.agent1}"
queues = {{ agents-queue = 0 }}
membership = "static"

[agents.alice]
contact = "sip:alice@127.0.0.1:{ports.alice}"
queues = {{ support-queue = 0 }}
membership = "static"

[agents.bob]
contact = "sip:bob@127.0.0.1:{ports.bob}"
queues = {{ support-queue = 0 }}
membership = "static"

[agents.carol]
password_file = "carol.secret"
queues = {{ soft-queue = 0 }}
membership = "static"

[agents.dave]
contact = "sip:dave@127.0.0.1:{ports.dave}"
queues = {{ dyn-queue = 0 }}

[external_targets.acme]
address = "127.0.0.1:{ports.acme}"
destination = "+4930123456"

[external_targets.busyco]
address = "127.0.0.1:{ports.busyco}"
destination = "4444"
answer_timeout_seconds = 5
"""


@dataclass
class QueueStack:
    stack: DevStack
    ports: Ports


@pytest.fixture(scope="module")
def queued(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueStack]:
    root = runtime.scratch_root() / f"test-queues-{tmp_path_factory.getbasetemp().name}"
    ports = Ports(*(free_port(udp_too=True) for _ in range(7)))
    root.mkdir(parents=True, exist_ok=True)
    config_file = root / "botbridge.toml"
    config_file.write_text(config_text(ports))
    (root / "state").mkdir(exist_ok=True)
    (root / "state" / "carol.secret").write_text(SOFTPHONE_SECRET + "\n")
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": str(config_file),
            "BOTBRIDGE_AGENT_CONTACT": f"sip:agent1@127.0.0.1:{ports.agent1}",
            "BOTBRIDGE_HTTP_TOKEN": TOKEN,
            "BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4",
        },
    )
    stack.start()
    yield QueueStack(stack, ports)
    stack.stop()


@pytest.fixture
def checked_stack(queued: QueueStack) -> DevStack:
    return queued.stack


def escalation_keys(escalate_to: str, refer_user: str = "escalation") -> dict[str, str]:
    payload = f"escalate_to={escalate_to}".encode().hex()
    return {
        "refer_user": refer_user,
        "refer_headers": f"?User-to-User={payload}%3Bencoding%3Dhex",
    }


def agent(stack: DevStack, port: int, scenario: str = "common/agent") -> SippRun:
    return stack.sipp().start(scenario, local_port=port, extra=["-d", "1500"], timeout=60)


def escalate(stack: DevStack, keys: dict[str, str]) -> tuple[SippRun, SippRun]:
    """A carrier call whose bot REFERs with ``keys``; (caller, bot)."""
    sipp = stack.sipp()
    bot = sipp.start("escalate/bot", local_port=stack.bot_port, keys=keys, extra=["-d", "1000"])
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": "15550001111"},
    )
    return caller, bot


def finished(*runs: SippRun) -> None:
    for run in runs:
        assert run.wait(CALL_TIMEOUT) == 0, run.report()


def interaction_id(bot: SippRun) -> str:
    value = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    assert value, bot.report()
    return value


def ari_app(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ARI_APP), *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def agent_states(stack: DevStack, name: str) -> str:
    result = ari_app(stack, "agent", "status", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_a_linear_queue_from_the_file_rings_its_first_agent_only(
    queued: QueueStack,
) -> None:
    stack, ports = queued.stack, queued.ports
    alice, bob = agent(stack, ports.alice), agent(stack, ports.bob)
    caller, bot = escalate(stack, escalation_keys("support"))
    finished(caller, bot, alice)
    invite = first(alice, method="INVITE", direction="received")
    assert invite.start_line.startswith("INVITE sip:alice@"), invite.start_line
    assert invite.header("X-Escalate-To") == "support"
    assert not all_of(bob, "INVITE"), "linear: bob is rung only when alice does not answer"
    bob.stop()
    row = await final_record(stack, interaction_id(bot), "escalated")
    assert row["queue"] == "support-queue"
    assert row["agent"] == "alice", row
    url = f"http://127.0.0.1:{stack.config.http.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        metrics = await reply.text()
    assert 'botbridge_agent_answers_total{agent="alice",queue="support-queue"} 1.0' in metrics


async def test_a_softphone_registers_with_digest_auth_and_is_rung(queued: QueueStack) -> None:
    stack, ports = queued.stack, queued.ports
    registration = stack.sipp().start(
        "queues/register",
        local_ip=SOFTPHONE_IP,
        local_port=ports.carol,
        remote=stack.sip_remote,
        keys={"agent": "carol"},
        extra=["-au", "carol", "-ap", SOFTPHONE_SECRET],
        timeout=30,
    )
    finished(registration)
    assert first(registration, status=401, direction="received")
    assert first(registration, status=200, direction="received")
    contacts = stack.instance.cli("pjsip show contacts").stdout
    assert f"carol/sip:carol@{SOFTPHONE_IP}:{ports.carol}" in contacts, contacts
    softphone = stack.sipp().start(
        "common/agent", local_ip=SOFTPHONE_IP, local_port=ports.carol, extra=["-d", "1500"]
    )
    caller, bot = escalate(stack, escalation_keys("soft"))
    finished(caller, bot, softphone)
    invite = first(softphone, method="INVITE", direction="received")
    assert invite.start_line.startswith(f"INVITE sip:carol@{SOFTPHONE_IP}:{ports.carol}")
    row = await final_record(stack, interaction_id(bot), "escalated")
    assert (row["queue"], row["agent"]) == ("soft-queue", "carol")


async def call_dyn_queue(queued: QueueStack, *, dave_rung: bool, business_hours: str) -> None:
    """A call escalated to dyn-queue: dave answers (``dave_rung``), or dave is not rung and
    the caller overflows to agents-queue, where agent1 answers. dyn-queue is the default
    profile's availability queue: the bot is told ``business_hours`` from dave's state."""
    stack, ports = queued.stack, queued.ports
    dave, agent1 = agent(stack, ports.dave), agent(stack, ports.agent1)
    caller, bot = escalate(stack, escalation_keys("dyn"))
    answering, other = (dave, agent1) if dave_rung else (agent1, dave)
    finished(caller, bot, answering)
    uui = first(bot, method="INVITE", direction="received").header("User-to-User")
    assert uui and decode_uui_header(uui) == f"business_hours={business_hours}", uui
    assert first(answering, method="INVITE", direction="received")
    assert not all_of(other, "INVITE"), other.report()
    other.stop()


async def test_an_agent_logs_in_out_and_pauses_at_run_time_and_stays_across_a_restart(
    queued: QueueStack,
) -> None:
    stack = queued.stack
    assert agent_states(stack, "dave") == "dave  dyn-queue=logged_out"
    await call_dyn_queue(queued, dave_rung=False, business_hours="closed")

    login = ari_app(stack, "agent", "login", "dave")
    assert (login.returncode, login.stdout.strip()) == (0, "dave  dyn-queue=available")
    await call_dyn_queue(queued, dave_rung=True, business_hours="available")

    assert ari_app(stack, "agent", "pause", "dave").stdout.strip() == "dave  dyn-queue=paused"
    await call_dyn_queue(queued, dave_rung=False, business_hours="busy")
    assert ari_app(stack, "agent", "unpause", "dave").returncode == 0

    stack.restart_app()  # app_queue keeps the membership; nothing logs dave in again
    assert agent_states(stack, "dave") == "dave  dyn-queue=available"
    await call_dyn_queue(queued, dave_rung=True, business_hours="available")

    # the HTTP API, with the bearer token like /reports
    url = f"http://127.0.0.1:{stack.config.http.port}/agents/dave/logout"
    async with aiohttp.ClientSession() as session:
        async with session.post(url) as refused:
            assert refused.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.post(url, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            assert await reply.json() == {"dave": {"dyn-queue": "logged_out"}}
        async with session.post(url.replace("dave", "mallory"), headers=headers) as unknown:
            assert unknown.status == 400
    await call_dyn_queue(queued, dave_rung=False, business_hours="closed")
    static = ari_app(stack, "agent", "logout", "alice")
    assert static.returncode == 2 and "static" in static.stderr
    nobody = ari_app(stack, "agent", "status", "mallory")
    assert nobody.returncode == 2 and "no agent 'mallory'" in nobody.stderr


async def test_an_external_target_gets_the_agent_headers(queued: QueueStack) -> None:
    stack, ports = queued.stack, queued.ports
    acme = agent(stack, ports.acme)
    caller, bot = escalate(stack, escalation_keys("acme"))
    finished(caller, bot, acme)
    invite = first(acme, method="INVITE", direction="received")
    assert invite.start_line.startswith("INVITE sip:+4930123456@127.0.0.1"), invite.start_line
    iid = interaction_id(bot)
    assert invite.header("X-Interaction-Id") == iid
    assert invite.header("X-Escalate-To") == "acme"
    uui = invite.header("User-to-User")
    assert uui and decode_uui_header(uui) == "escalate_to=acme", uui
    row = await final_record(stack, iid, "escalated")
    assert row["queue"] == "acme"
    assert row["agent"] == "acme", row


@pytest.mark.parametrize(
    ("scenario", "results"),
    [
        ("bot_rejects/bot_486", {"full"}),
        ("bot_rejects/bot_603", {"full", "no_agents"}),
        ("bot_no_answer/bot", {"timeout"}),
    ],
)
async def test_a_failing_external_target_is_a_failed_escalation(
    queued: QueueStack, scenario: str, results: set[str]
) -> None:
    """Busy (486), rejected (603) or unanswered (CANCEL after answer_timeout_seconds): the
    caller goes back to the app as from a failed queue, and the profile's
    ``on_escalation_failure`` (here ``overflow`` to agents-queue) decides."""
    stack, ports = queued.stack, queued.ports
    busy = stack.sipp().start(scenario, local_port=ports.busyco, timeout=60)
    agent1 = agent(stack, ports.agent1)
    caller, bot = escalate(stack, escalation_keys("busyco"))
    finished(caller, bot, busy, agent1)
    assert first(busy, method="INVITE", direction="received")
    invite = first(agent1, method="INVITE", direction="received")
    assert invite.header("X-Escalate-To") == "busyco"
    row = await final_record(stack, interaction_id(bot), "escalated")
    attempts = json.loads(str(row["escalations"]))
    assert [(a["target"], a["via"]) for a in attempts] == [
        ("busyco", "refer"),
        ("agents-queue", "overflow"),
    ], attempts
    assert attempts[0]["result"] in results and attempts[1]["result"] == "answered"
    assert (row["queue"], row["agent"]) == ("agents-queue", "agent1"), row


async def test_a_busy_external_target_returns_the_caller_to_the_bot(
    queued: QueueStack,
) -> None:
    """With the shipped ``on_escalation_failure = "return_to_bot"``: busyco answers 486, the
    caller gets a new bot dialog told why, and that dialog's escalation reaches agent1."""
    stack, ports = queued.stack, queued.ports
    busy = stack.sipp().start("bot_rejects/bot_486", local_port=ports.busyco, timeout=60)
    agent1 = agent(stack, ports.agent1)
    bot = stack.sipp().start(
        "handoff/bot",
        local_port=stack.bot_port,
        keys={
            **escalation_keys("busyco"),
            "return_refer_headers": escalation_keys("agents-queue")["refer_headers"],
        },
        calls=2,
        extra=["-d", "1000"],
    )
    caller = stack.sipp().start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=RETURN_NUMBER,
        keys={"caller_number": "15550003333"},
    )
    finished(caller, bot, busy, agent1)
    invites = [m for m in all_of(bot, "INVITE") if m.direction == "received"]
    assert len(invites) == 2, bot.report()
    assert decode_uui_header(invites[1].header("User-to-User") or "") == (
        "business_hours=available;escalation=failed;reason=full;queue=busyco"
    )
    row = await final_record(stack, interaction_id(bot), "escalated")
    attempts = json.loads(str(row["escalations"]))
    assert [(a["target"], a["result"]) for a in attempts] == [
        ("busyco", "full"),
        ("agents-queue", "answered"),
    ], attempts
    assert row["agent"] == "agent1"


async def test_a_refer_naming_anything_else_never_dials_out(queued: QueueStack) -> None:
    """The Refer-To names the target and a number, the context an unknown value: the caller
    goes to the default queue; neither trunk is dialled."""
    stack, ports = queued.stack, queued.ports
    acme, busy = agent(stack, ports.acme), agent(stack, ports.busyco)
    for refer_user, escalate_to in (("acme", "nowhere"), ("+4930123456", "+4930999")):
        agent1 = agent(stack, ports.agent1)
        caller, bot = escalate(stack, escalation_keys(escalate_to, refer_user))
        finished(caller, bot, agent1)
        row = await final_record(stack, interaction_id(bot), "escalated")
        assert (row["queue"], row["error_reason"]) == ("agents-queue", "escalate_to_unknown")
    assert not all_of(acme, "INVITE") and not all_of(busy, "INVITE")
    acme.stop()
    busy.stop()


async def test_a_login_is_kept_across_an_asterisk_restart(queued: QueueStack) -> None:
    """persistentmembers: app_queue writes dynamic members to AstDB and reads them at start."""
    stack = queued.stack
    assert ari_app(stack, "agent", "login", "dave").returncode == 0
    stack.instance.restart()
    try:
        assert agent_states(stack, "dave") == "dave  dyn-queue=available"
    finally:
        assert ari_app(stack, "agent", "logout", "dave").returncode == 0
    assert agent_states(stack, "dave") == "dave  dyn-queue=logged_out"

    async def app_ready() -> bool:
        url = f"http://127.0.0.1:{stack.config.http.port}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            return reply.status == 200

    await until(app_ready, 20, "the app reconnected to the restarted Asterisk")
