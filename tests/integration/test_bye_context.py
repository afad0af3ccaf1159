"""Context on the bot's BYE ([bye_context], read from Asterisk's HEP capture): real Asterisk 22,
SIPp caller, bot and agent. escalate_to on the BYE sends the caller to that queue as an
escalation; any other context is recorded and the call is resolved. A flood of large forged
copies on no live dialog (what anyone reaching Asterisk's SIP port can cause) leaves the app's
memory as it was, and a call during it still gets its BYE context to the agent.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ari_app.config import hep_password
from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import first, queued_caller, sipp_finished, until
from tests.integration.test_call_flow import decode_uui_header, final_record
from tests.integration.test_metrics import Samples, scrape
from tests.unit.test_bye_context_limits import forged

pytestmark = pytest.mark.integration

CALL_TIMEOUT = 40
FLOOD = 10_000
# the flood is sent in bursts small enough for the app's socket buffer (UDP: the kernel
# drops what does not fit), each once the app has read the last, waiting at most
# FLOOD_READ_TIMEOUT seconds for it
FLOOD_BURST = 2
FLOOD_READ_TIMEOUT = 5.0
FLOOD_POLL_SECONDS = 0.0005
PROC_READS = 5
# forged BYEs sent to Asterisk's SIP port itself, from an address on no allow-list
FORGED_TO_ASTERISK = 50
FORGED_ROUNDS = 4
FORGED_PAUSE_SECONDS = 0.005
FORGED_SETTLE_SECONDS = 0.5
SIP_REPLY_BYTES = 65535
STRANGER = "127.0.0.2"
# what the old receiver kept of such a flood, measured: 10,000 entries x 31 KB = 314 MB
OLD_FLOOD_RSS_BYTES = 314 * 2**20
# the bot talks long enough for a killed app to be back before its BYE (tests/integration/
# test_restart.py does the same)
RESTART_TALK_MS = 6000


@pytest.fixture(scope="module")
def hep_stack(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    config_file = tmp_path_factory.mktemp("bye") / "bye.toml"
    config_file.write_text(
        f"[bye_context]\nenabled = true\ncapture_port = {free_port(udp_too=True)}\n"
    )
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-bye-{tmp_path_factory.getbasetemp().name}",
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config_file)},
    )
    stack.start()
    yield stack
    stack.stop()


def start_parties(
    stack: DevStack, context: str, *, agent: bool, bot_talk_ms: int = 1500
) -> tuple[SippRun, SippRun, SippRun | None]:
    sipp = stack.sipp()
    agent_run = (
        sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "1000"])
        if agent
        else None
    )
    bot = sipp.start(
        "bye_context/bot",
        local_port=stack.bot_port,
        keys={"bye_uui": context.encode().hex() + ";encoding=hex"},
        extra=["-d", str(bot_talk_ms)],
    )
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": "15550006666"},
    )
    return caller, bot, agent_run


async def test_bye_with_escalate_to_queues_the_caller(hep_stack: DevStack) -> None:
    await escalated_by_bye(hep_stack)


async def escalated_by_bye(hep_stack: DevStack) -> None:
    """A call whose bot hangs up with escalate_to=billing on its BYE reaches the agent with
    that context."""
    caller, bot, agent = start_parties(hep_stack, "escalate_to=billing;order=A-9", agent=True)
    async with hep_stack.rest() as ari:
        queued = await until(lambda: queued_caller(ari), 25, "the caller in Queue()")
        queue_args = queued.dialplan.app_data or ""
        escalate_to = await ari.get_var(queued.id, "BOTBRIDGE_ESCALATE_TO")
        outcome = await ari.get_var(queued.id, "BOTBRIDGE_OUTCOME")
    assert agent is not None
    for run in (caller, bot, agent):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    assert queue_args.startswith("billing-queue,")
    assert escalate_to == "billing" and outcome == "escalated"
    agent_invite = first(agent, method="INVITE", direction="received")
    assert agent_invite.header("X-Escalate-To") == "billing"
    assert decode_uui_header(agent_invite.header("User-to-User") or "") == (
        "escalate_to=billing;order=A-9"
    )
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    row = await final_record(hep_stack, iid or "", "escalated")
    assert row["queue"] == "billing-queue" and row["escalate_to"] == "billing"
    assert row["context"] == {"escalate_to": "billing", "order": "A-9"}
    assert row["transfer_at"] and row["bot_ended_at"] == row["transfer_at"]
    assert row["agent_answered_at"]


async def test_bye_with_other_context_is_resolved_and_recorded(hep_stack: DevStack) -> None:
    caller, bot, _ = start_parties(hep_stack, "outcome=paid;amount=12", agent=False)
    for run in (caller, bot):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    assert first(caller, method="BYE", direction="received")
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    row = await final_record(hep_stack, iid or "", "resolved")
    assert row["context"] == {"outcome": "paid", "amount": "12"}
    assert row["queue"] is None and row["transfer_at"] is None


def copies(samples: Samples, result: str) -> float:
    return samples.get(("botbridge_bye_context_copies_total", (("result", result),)), 0.0)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def receive_queue(port: int) -> tuple[int, int]:
    """Bytes waiting in the app's UDP socket on ``port`` and the datagrams it dropped (a full
    buffer), from /proc/net/udp: the same for any receiver, old or new. The file is read in
    pieces while other sockets come and go, so a line can be missed: read again."""
    for _ in range(PROC_READS):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[4].split(":")[1], 16), int(fields[-1])
    raise AssertionError(f"no UDP socket on port {port}")


def flood(stack: DevStack) -> int:
    """FLOOD forged copies, with the capture password and Asterisk's SIP port as the
    destination (as Asterisk sends what it received), each burst sent once the app has read
    the last (so none is lost to a full socket buffer); how many the socket dropped."""
    password = hep_password(stack.config)
    address = (stack.config.bye_context.capture_host, stack.config.bye_context.capture_port)
    _, dropped_before = receive_queue(address[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(FLOOD):
            sock.sendto(forged(n, password=password, dst_port=stack.sip_port), address)
            if n % FLOOD_BURST == FLOOD_BURST - 1:
                deadline = time.monotonic() + FLOOD_READ_TIMEOUT
                while receive_queue(address[1])[0] and time.monotonic() < deadline:
                    time.sleep(FLOOD_POLL_SECONDS)
    return receive_queue(address[1])[1] - dropped_before


async def test_a_flood_of_forged_copies_keeps_memory_bounded_and_calls_going(
    hep_stack: DevStack,
) -> None:
    assert hep_stack.app_proc is not None
    pid = hep_stack.app_proc.pid
    before = rss_bytes(pid)
    counted_before = copies(await scrape(hep_stack), "other_dialog")
    call = asyncio.create_task(escalated_by_bye(hep_stack))  # during the flood
    dropped = await asyncio.to_thread(flood, hep_stack)
    grown = rss_bytes(pid) - before
    await call
    after = await scrape(hep_stack)
    # every forged copy dropped unparsed: the process grew by a small fraction of what the
    # old receiver kept (it held each copy, headers joined), if at all
    assert grown < OLD_FLOOD_RSS_BYTES / 20, grown
    assert dropped == 0  # the app read all FLOOD
    # the flood, and the messages of the caller's and the agent's dialogs
    assert copies(after, "other_dialog") - counted_before >= FLOOD
    assert after[("botbridge_bye_context_held", ())] == 0
    assert copies(after, "kept") >= 1  # the call's own BYE
    await escalated_by_bye(hep_stack)  # and after it

    async def all_forgotten() -> Samples | None:
        samples = await scrape(hep_stack)
        return samples if samples[("botbridge_bye_context_dialogs", ())] == 0 else None

    await until(all_forgotten, 10, "the ended calls' bot dialogs no longer followed")


def forged_sip_bye(n: int, stack: DevStack, source_port: int) -> bytes:
    """A BYE on no dialog, with a large context header, as anyone can send to Asterisk."""
    return (
        f"BYE sip:bot@{stack.sip_remote} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {STRANGER}:{source_port};branch=z9hG4bK-forged-{n}\r\n"
        f"From: <sip:a@{STRANGER}>;tag=f{n}\r\nTo: <sip:b@{stack.sip_remote}>;tag=t{n}\r\n"
        f"Call-ID: forged-{n}@{STRANGER}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
        f"User-to-User: {'ab' * 1000};encoding=hex\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_asterisk_copies_forged_byes_and_the_app_drops_them_unparsed(
    hep_stack: DevStack,
) -> None:
    """The path of the attack: Asterisk copies a BYE from a stranger over HEP, then its
    signalling ACL answers it 403; the app counts the copy as no live bot dialog and keeps
    nothing."""
    start = await scrape(hep_stack)
    before, kept = copies(start, "other_dialog"), copies(start, "kept")
    asterisk = (str(hep_stack.config.sip.host), hep_stack.sip_port)
    counted = 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER, 0))
        port = sock.getsockname()[1]
        for n in range(FORGED_TO_ASTERISK * FORGED_ROUNDS):  # UDP: a lost one is replaced
            sock.sendto(forged_sip_bye(n, hep_stack, port), asterisk)
            await asyncio.sleep(FORGED_PAUSE_SECONDS)
            if n % FORGED_TO_ASTERISK == FORGED_TO_ASTERISK - 1:
                await asyncio.sleep(FORGED_SETTLE_SECONDS)
                samples = await scrape(hep_stack)
                counted = copies(samples, "other_dialog") - before
                if counted >= FORGED_TO_ASTERISK:
                    break
        sock.settimeout(FORGED_SETTLE_SECONDS)
        reply = sock.recv(SIP_REPLY_BYTES)
    assert reply.startswith(b"SIP/2.0 403 ")  # the signalling ACL refused the stranger...
    assert counted >= FORGED_TO_ASTERISK  # ...after Asterisk had copied its BYEs
    assert samples[("botbridge_bye_context_held", ())] == 0
    assert copies(samples, "kept") == kept


async def test_a_call_re_adopted_after_a_restart_keeps_its_bye_context(
    hep_stack: DevStack,
) -> None:
    """The app is killed (SIGKILL) while the bot talks and started again: the re-adopted
    call still gets the bot's BYE context, and its escalate_to escalates it."""
    caller, bot, agent = start_parties(
        hep_stack, "escalate_to=billing;order=A-9", agent=True, bot_talk_ms=RESTART_TALK_MS
    )

    def talking() -> Record | None:
        store = InteractionStore(hep_stack.config.store.url, migrate=False)
        try:
            rows = [r for r in store.open_interactions() if r["state"] == "bot_connected"]
        finally:
            store.close()
        return rows[0] if rows else None

    row = await until(talking, 20, "the call with the bot")
    assert hep_stack.app_proc is not None
    hep_stack.app_proc.kill()  # no cleanup, no last write
    hep_stack.app_proc.wait()
    hep_stack.start_app()
    assert agent is not None
    for run in (caller, bot, agent):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    final = await final_record(hep_stack, row["interaction_id"], "escalated")
    assert final["reconciled_at"] is not None
    assert final["queue"] == "billing-queue" and final["escalate_to"] == "billing"
    assert final["context"] == {"escalate_to": "billing", "order": "A-9"}
