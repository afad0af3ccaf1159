"""No record lost: the app is killed (SIGKILL) in the middle of live calls and restarted.

Each test places a real call through Asterisk with SIPp parties, waits until the record shows
the call in a given state, kills the app process with SIGKILL, starts it again and checks
that reconciliation completes the record or marks it (docs/records.md, "Reconciliation").
The stack is this module's own: killing its app disturbs no other test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ari_app.records import Record, RecordChange
from ari_app.store import InteractionStore
from ari_app.store.journal import Change, Journal
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import first, load_callers, sipp_finished, until
from tests.records import stored

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CALL_TIMEOUT = 40
SEED_ESCALATION_HEX = "657363616c6174655f746f3d6167656e74732d7175657565"  # escalate_to=agents-queue
BOT_TALK_MS = 6000  # long enough for the app to come back before the bot hangs up
RESTART_MARGIN_SECONDS = 1.0


@pytest.fixture(scope="module")
def restart_stack(runtime: Runtime) -> Iterator[DevStack]:
    stack = build_stack(
        runtime, runtime.scratch_root() / f"test-restart-{uuid.uuid4().hex[:8]}", free_ports=True
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
async def stack(restart_stack: DevStack) -> AsyncIterator[DevStack]:
    """The module's stack with its app running; after the test, nothing left in Asterisk."""
    if restart_stack.app_proc is None or restart_stack.app_proc.poll() is not None:
        restart_stack.start_app()
    yield restart_stack
    async with restart_stack.rest() as ari:

        async def empty() -> bool:
            return not await ari.channels() and not await ari.bridges()

        await until(empty, 20, "no channels and no bridges left in Asterisk")


@pytest.fixture
def store(restart_stack: DevStack) -> Iterator[InteractionStore]:
    store = InteractionStore(restart_stack.config.store.url)
    yield store
    store.close()


def kill_app(stack: DevStack) -> None:
    assert stack.app_proc is not None
    stack.app_proc.kill()  # SIGKILL: no cleanup, no last write
    stack.app_proc.wait()


def record_of(
    store: InteractionStore, caller_number: str, check: Callable[[Record], bool]
) -> Callable[[], Record | None]:
    """A poll for the record of the call from ``caller_number`` once ``check`` holds."""

    def poll() -> Record | None:
        for row in store.all():
            if row["caller_number"] == caller_number and check(row):
                return row
        return None

    return poll


def start_caller(
    stack: DevStack, number: str, scenario: str = "common/caller_waits", **kw: Any
) -> SippRun:
    return stack.sipp().start(
        scenario,
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": number},
        **kw,
    )


async def test_killed_while_the_bot_talks_the_call_is_re_adopted(
    stack: DevStack, store: InteractionStore
) -> None:
    number = "15550007001"
    bot = stack.sipp().start(
        "bot_resolves/bot", local_port=stack.bot_port, extra=["-d", str(BOT_TALK_MS)]
    )
    caller = start_caller(stack, number)
    row = await until(
        record_of(store, number, lambda r: r["state"] == "bot_connected"), 15, "bot connected"
    )
    kill_app(stack)
    stack.start_app()
    back_at = time.time()

    final: dict[str, Any] = dict(
        await until(
            record_of(store, number, lambda r: r["ended_at"] is not None), 30, "the record ended"
        )
    )
    for run in (caller, bot):
        run.wait(CALL_TIMEOUT)
        assert run.returncode == 0, run.report()
    # the restarted app took the call over: the bot's hang-up resolved it as usual
    assert first(caller, method="BYE", direction="received")
    assert final["interaction_id"] == row["interaction_id"]
    assert final["outcome"] == "resolved" and final["state"] == "resolved"
    assert final["reconciled_at"] is not None
    assert final["bot_answered_at"] == row["bot_answered_at"]
    assert final["error_reason"] is None
    if back_at + RESTART_MARGIN_SECONDS < final["bot_answered_at"] + BOT_TALK_MS / 1000:
        # back before the bot hung up: the app saw the hang-up, the bot time is exact
        assert final["bot_ended_at"] <= final["ended_at"]
        assert BOT_TALK_MS / 1000 - 1 < final["bot_seconds"] < BOT_TALK_MS / 1000 + 5
        assert final["billable_minutes"] == 1.0
    else:  # a slow restart: the bot hung up unseen, its time is unknown, never guessed
        assert final["bot_seconds"] is None and final["billable_minutes"] is None


async def test_caller_gone_while_the_app_was_down_is_marked(
    stack: DevStack, store: InteractionStore
) -> None:
    number = "15550007002"
    bot = stack.sipp().start("caller_abandons/bot", local_port=stack.bot_port)
    caller = start_caller(stack, number, "common/caller_hangs_up", extra=["-d", "2000"])
    row = await until(
        record_of(store, number, lambda r: r["state"] == "bot_connected"), 15, "bot connected"
    )
    kill_app(stack)
    caller.wait(CALL_TIMEOUT)  # hangs up while nobody follows the call
    assert caller.returncode == 0, caller.report()
    async with stack.rest() as ari:

        async def caller_gone() -> bool:
            return row["caller_channel"] not in {c.id for c in await ari.channels()}

        await until(caller_gone, 10, "the caller's channel destroyed")
    assert stored(store, row["interaction_id"])["ended_at"] is None
    stack.start_app()

    final: dict[str, Any] = dict(
        await until(
            record_of(store, number, lambda r: r["ended_at"] is not None), 15, "the record closed"
        )
    )
    # the bot leg left behind is released by the reconciliation
    bot.wait(CALL_TIMEOUT)
    assert bot.returncode == 0, bot.report()
    assert first(bot, method="BYE", direction="received")
    assert final["outcome"] == "error" and final["state"] == "error"
    assert final["error_reason"] == "app_restarted"
    assert final["reconciled_at"] == final["ended_at"]
    # the bot leg was up until the reconciliation ended it: that is its time
    assert final["bot_ended_at"] == final["ended_at"]
    assert final["bot_seconds"] > 2 and final["billable_minutes"] >= 1.0


async def test_killed_while_queued_the_end_is_still_recorded(
    stack: DevStack, store: InteractionStore
) -> None:
    number = "15550007003"
    sipp = stack.sipp()
    agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "6000"])
    bot = sipp.start(
        "escalate/bot",
        local_port=stack.bot_port,
        keys={
            "refer_user": "escalation",
            "refer_headers": f"?User-to-User={SEED_ESCALATION_HEX}%3Bencoding%3Dhex",
        },
        extra=["-d", "1000"],
    )
    caller = start_caller(stack, number)
    row = await until(record_of(store, number, lambda r: r["state"] == "queued"), 20, "queued")
    kill_app(stack)
    stack.start_app()

    final: dict[str, Any] = dict(
        await until(
            record_of(store, number, lambda r: r["ended_at"] is not None), 30, "the record ended"
        )
    )
    for run in (caller, bot, agent):
        run.wait(CALL_TIMEOUT)
        assert run.returncode == 0, run.report()
    assert final["interaction_id"] == row["interaction_id"]
    assert final["outcome"] == "escalated" and final["queue"] == "agents-queue"
    assert final["reconciled_at"] is not None
    # the agent's answer (seen before the kill, or found after it) and the end of the call
    assert final["agent_answered_at"] is not None
    assert final["queued_at"] < final["agent_answered_at"] < final["ended_at"]
    # billing was settled at the transfer, before the kill
    assert final["bot_ended_at"] == final["transfer_at"] and final["billable_minutes"] == 1.0


LOAD_CALLS = 40
LOAD_RATE = 20  # calls/s
LOAD_BOT_TALK_MS = 6000
DURABILITY_SECONDS = 1.0  # a state change older than this at the kill must be on disk


async def test_killed_under_load_every_state_older_than_a_second_is_on_disk(
    stack: DevStack, store: InteractionStore
) -> None:
    """Records are written in batches off the call path: a SIGKILL may lose the last batch,
    never a state change more than DURABILITY_SECONDS old; the restart then completes them."""
    bot = stack.sipp().start(
        "load/bot_resolve",
        local_port=stack.bot_port,
        extra=["-aa", "-d", str(LOAD_BOT_TALK_MS)],
        calls=LOAD_CALLS,
    )
    callers = load_callers(stack, calls=LOAD_CALLS, rate=LOAD_RATE, prefix="1777")

    def acks() -> dict[str, float]:
        """Interaction id -> when the bot got the ACK of its 200 (the app's bot_connected
        follows within milliseconds)."""
        ids: dict[str, str] = {}
        acked: dict[str, float] = {}
        for msg in bot.messages():
            if msg.method == "INVITE":
                ids[msg.header("Call-ID") or ""] = msg.header("X-Interaction-Id") or ""
            elif msg.method == "ACK":
                acked[ids[msg.header("Call-ID") or ""]] = msg.at
        return acked

    await until(lambda: len(acks()) == LOAD_CALLS, 20, "every bot call answered")
    time.sleep(DURABILITY_SECONDS + 0.2)
    killed_at = time.time()
    kill_app(stack)

    on_disk = {r["interaction_id"]: r for r in store.all()}
    old_enough = [iid for iid, at in acks().items() if at < killed_at - DURABILITY_SECONDS]
    assert len(old_enough) == LOAD_CALLS
    for iid in old_enough:
        row = on_disk.get(iid)
        assert row is not None and row["state"] == "bot_connected", (iid, row)
        assert row["bot_answered_at"] is not None

    stack.start_app()
    for run in (callers, bot):
        await sipp_finished(run, 40)
        assert run.wait(1) == 0, run.report()[-3000:]

    def closed() -> list[Record] | None:
        rows = [r for r in store.all() if (r["caller_number"] or "").startswith("1777")]
        return rows if len(rows) == LOAD_CALLS and all(r["ended_at"] for r in rows) else None

    rows = await until(closed, 20, "every record of the load closed")
    assert {r["outcome"] for r in rows} == {"resolved"}
    assert all(r["reconciled_at"] for r in rows)


async def test_the_app_replays_a_record_journal_left_by_an_earlier_run(
    stack: DevStack, store: InteractionStore
) -> None:
    """Record changes an earlier run could not write (the database down at its shutdown) are
    in the journal of the state directory: the next start writes them before anything new."""
    kill_app(stack)
    settings = stack.config.store
    journal = Journal(stack.config.state_path(settings.journal_path), settings.journal_max_bytes)
    iid, now = uuid.uuid4().hex, time.time()
    journaled: RecordChange = {
        "profile": "default",
        "caller_channel": f"journal-{iid}",
        "caller_number": "journal-1",
        "state": "resolved",
        "outcome": "resolved",
        "started_at": now - 10,
        "ended_at": now - 5,
    }
    assert journal.append({iid: Change(True, journaled)}) and store.get(iid) is None
    stack.start_app()

    def replayed() -> Record | None:
        emptied = Journal(journal.path, settings.journal_max_bytes).entries == 0
        return store.get(iid) if emptied else None

    row = await until(replayed, 20, "the journaled record written, the journal emptied")
    assert row["outcome"] == "resolved" and row["caller_number"] == "journal-1"
