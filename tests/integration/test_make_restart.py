"""`make restart` through the operator's own targets, with calls running.

`make up`, `make restart`, `make status` and `make down` run as subprocesses, as typed in a
shell, in a checkout of their own: a scratch directory holding this repository's Makefile,
package and virtualenv (symbolic links), so the stack never meets a developer's `make up`.
Its state directory is the default one (``./var`` of the directory `make` runs in), as for
an operator who set nothing: a test that sets ``BOTBRIDGE_STATE_DIR`` would hide a restart
that decides another state directory (and so another ARI password and store). Only the
ports are given, through the environment, so that parallel runs never collide.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import RUN_INFO, DevStack, build_stack, free_port_env, stack_settings
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from tests.checkout import Checkout, make_checkout
from tests.harness import load_callers, resolving_load, sipp_finished, until
from tests.records import assert_resolved_once, closed_calls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BOT_TALK_MS = 6000  # the calls in progress are still with the bot when the restart begins
CALLS_BEFORE = 3
CALLS_AFTER = 2
CALL_RATE = 5  # calls/s
SIPP_TIMEOUT_SECONDS = 240  # the bot answers calls before and after the restart


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Checkout]:
    checkout = make_checkout(tmp_path / "checkout", RUN_INFO)
    checkout.env.update(free_port_env())
    yield checkout
    if checkout.info_path.exists():  # a failed test must not leave Asterisk running
        root = checkout.info()["root"]
        checkout.make("down")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def observer(runtime: Runtime, checkout: Checkout) -> Iterator[list[DevStack]]:
    """A DevStack object for the SIPp parties, the store and ARI of the checkout's stack (made
    once it is up); it starts and stops nothing of the stack, only its SIPp parties."""
    made: list[DevStack] = []
    yield made
    for stack in made:
        stack.stop_sipps()
        shutil.rmtree(stack.root, ignore_errors=True)


def up_and_observed(
    runtime: Runtime, checkout: Checkout, observer: list[DevStack]
) -> tuple[dict[str, Any], DevStack]:
    """`make up` in the checkout; its ``stack.json`` and a DevStack object on that stack
    (kept in ``observer``) for the SIPp parties, the store and ARI."""
    up = checkout.make("up")
    assert up.returncode == 0, up
    info = checkout.info()
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-make-restart-{uuid.uuid4().hex[:8]}",
        free_ports=False,
        extra_env={**checkout.env, "BOTBRIDGE_STATE_DIR": info["settings"]["state_dir"]},
    )
    observer.append(stack)
    return info, stack


def calls_of(store: InteractionStore, prefix: str) -> list[Record]:
    return [r for r in store.all() if (r["caller_number"] or "").startswith(prefix)]


async def test_make_restart_keeps_the_stack_and_the_calls(
    runtime: Runtime, checkout: Checkout, observer: list[DevStack]
) -> None:
    info, stack = up_and_observed(runtime, checkout, observer)
    # the default state directory: ./var of the directory `make up` ran in
    assert info["settings"]["state_dir"] == str(checkout.path / "var")
    assert (checkout.path / "var" / "ari-password").exists()
    assert stack_settings(stack.config) == info["settings"]
    store = InteractionStore(stack.config.store.url)
    bot = stack.sipp().start(
        "load/bot_resolve",
        local_port=stack.bot_port,
        extra=["-aa", "-d", str(BOT_TALK_MS)],
        calls=CALLS_BEFORE + CALLS_AFTER,
        timeout=SIPP_TIMEOUT_SECONDS,
    )
    before = load_callers(stack, calls=CALLS_BEFORE, rate=CALL_RATE, prefix="1881")

    def with_the_bot() -> bool:
        rows = calls_of(store, "1881")
        return len(rows) == CALLS_BEFORE and all(r["state"] == "bot_connected" for r in rows)

    await until(with_the_bot, 20, "the first calls with the bot")

    # a shell that would start the app with another port or a password Asterisk refuses is
    # turned away before the running app is touched
    http = info["settings"]["http"]
    for name, value, why in (
        ("BOTBRIDGE_HTTP_PORT", "1", f"http {http} -> {http.rsplit(':', 1)[0]}:1"),
        ("BOTBRIDGE_ARI_PASSWORD", "not-it", "refuses the ARI credentials"),
    ):
        refused = checkout.make("restart", {name: value})
        assert refused.returncode != 0, refused
        assert why in refused.stderr and "app was left alone" in refused.stderr, refused
        assert checkout.info()["app_pid"] == info["app_pid"]
        assert checkout.make("status").returncode == 0

    restart = checkout.make("restart")
    assert restart.returncode == 0, restart
    assert "ready" in restart.stdout, restart
    after_restart = checkout.info()
    assert after_restart["app_pid"] != info["app_pid"]
    assert after_restart["asterisk_pid"] == info["asterisk_pid"]
    assert after_restart["settings"] == info["settings"]

    status = checkout.make("status")
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["alive"] is True, status
    async with stack.rest() as ari:  # the new app registered with the stack's Asterisk
        assert stack.config.ari.app in [a.get("name") for a in await ari.applications()]

    after = load_callers(stack, calls=CALLS_AFTER, rate=CALL_RATE, prefix="1882")
    runs: list[SippRun] = [before, after, bot]
    for run in runs:
        await sipp_finished(run, SIPP_TIMEOUT_SECONDS)
        assert run.wait(1) == 0, run.report()[-3000:]
    # the bot answered every call: the ones in progress and the ones placed after
    assert sum(1 for m in bot.messages() if m.method == "INVITE") == CALLS_BEFORE + CALLS_AFTER

    def closed(prefix: str, count: int) -> list[Record] | None:
        rows = calls_of(store, prefix)
        return rows if len(rows) == count and all(r["ended_at"] for r in rows) else None

    in_progress = await until(lambda: closed("1881", CALLS_BEFORE), 20, "calls before closed")
    placed_after = await until(lambda: closed("1882", CALLS_AFTER), 20, "calls after closed")
    for row in in_progress + placed_after:
        # resolved by the bot's hang-up: none cut, none sent to the fallback queue
        assert (row["outcome"], row["error_reason"]) == ("resolved", None), row
        assert (row["bot_seconds"] or 0.0) >= BOT_TALK_MS / 1000 - 1, row
    store.close()

    down = checkout.make("down")
    assert down.returncode == 0 and "stopped Asterisk and the app" in down.stdout, down
    assert not checkout.info_path.exists()


# `make restart` twice under load: 20 calls/s with bot conversations of 30 s (docs/operations.md)
HANDOVER_CALL_RATE = 20  # calls/s
HANDOVER_BOT_TALK_MS = 30_000
HANDOVER_LOAD_SECONDS = 40  # calls are placed for this long; the restarts fall within it
HANDOVER_CALLS = HANDOVER_CALL_RATE * HANDOVER_LOAD_SECONDS
FIRST_RESTART_AFTER_SECONDS = 12  # a few hundred conversations in progress by then
BETWEEN_RESTARTS_SECONDS = 8
HANDOVER_SIPP_TIMEOUT_SECONDS = HANDOVER_LOAD_SECONDS + HANDOVER_BOT_TALK_MS / 1000 + 120
TOOK_OVER = "took the calls over"


async def test_make_restart_twice_under_load_hands_every_call_over(
    runtime: Runtime, checkout: Checkout, observer: list[DevStack]
) -> None:
    """Calls placed at HANDOVER_CALL_RATE for HANDOVER_LOAD_SECONDS, each a 30 s bot
    conversation, and `make restart` twice meanwhile: no caller and no bot call fails, the
    bot answers every call, none bypasses the bot or is cut (every record `resolved` by the
    bot's hang-up after its whole conversation), and each call has exactly one record."""
    info, stack = up_and_observed(runtime, checkout, observer)
    callers, bot = resolving_load(
        stack,
        calls=HANDOVER_CALLS,
        rate=HANDOVER_CALL_RATE,
        talk_ms=HANDOVER_BOT_TALK_MS,
        prefix="1883",
        timeout=HANDOVER_SIPP_TIMEOUT_SECONDS,
    )
    pids = [info["app_pid"]]
    for wait in (FIRST_RESTART_AFTER_SECONDS, BETWEEN_RESTARTS_SECONDS):
        await asyncio.sleep(wait)
        restart = checkout.make("restart")
        assert restart.returncode == 0, restart
        assert "ready" in restart.stdout, restart
        print(restart.stdout.strip())
        pids.append(checkout.info()["app_pid"])
    assert len(set(pids)) == len(pids), pids
    for pid in pids[:-1]:  # each replaced app exited by itself
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    for run in (callers, bot):
        await sipp_finished(run, HANDOVER_SIPP_TIMEOUT_SECONDS)
        assert run.wait(1) == 0, run.report()[-3000:]
    assert sum(1 for m in bot.messages() if m.method == "INVITE") == HANDOVER_CALLS

    rows = await closed_calls(stack.config.store.url, "1883", HANDOVER_CALLS, 60)
    assert_resolved_once(rows, HANDOVER_CALLS, HANDOVER_BOT_TALK_MS)

    log_text = (Path(info["root"]) / "app.log").read_text(errors="replace")
    took_over = [line for line in log_text.splitlines() if TOOK_OVER in line]
    print("\n".join(took_over))
    assert len(took_over) == 2, log_text[-3000:]
    assert "did not let go" not in log_text


HANDOVER_RING_SECONDS = 12  # tests/scenarios/handover/bot_rings.xml: the bot's 180 to its 200
RINGING_BOT_TALK_MS = 3000
TAKEN_OVER_DIALLING = "re-adopted in state bot_dialling after a handover"


async def test_make_restart_while_the_bot_rings_keeps_that_bot(
    runtime: Runtime, checkout: Checkout, observer: list[DevStack]
) -> None:
    """`make restart` while the bot of a call is still ringing: the new app takes the call
    over in the middle of its set-up, the bot's answer (an event the new app gets) connects
    it, and the bot resolves it. (A crash sends such a call to the fallback queue.)"""
    info, stack = up_and_observed(runtime, checkout, observer)
    store = InteractionStore(stack.config.store.url)
    bot = stack.sipp().start(
        "handover/bot_rings",
        local_port=stack.bot_port,
        extra=["-aa", "-d", str(RINGING_BOT_TALK_MS)],
        timeout=SIPP_TIMEOUT_SECONDS,
    )
    caller = load_callers(stack, calls=1, rate=1, prefix="1884", timeout=SIPP_TIMEOUT_SECONDS)

    def dialling() -> bool:
        rows = calls_of(store, "1884")
        return len(rows) == 1 and rows[0]["state"] == "bot_dialling"

    await until(dialling, 20, "the bot ringing")
    restart = checkout.make("restart")
    assert restart.returncode == 0, restart
    # still ringing: the call was handed over in the middle of its set-up
    assert calls_of(store, "1884")[0]["state"] == "bot_dialling", (
        f"the restart outlasted the bot's {HANDOVER_RING_SECONDS} s of ringing"
    )

    for run in (caller, bot):
        await sipp_finished(run, SIPP_TIMEOUT_SECONDS)
        assert run.wait(1) == 0, run.report()[-3000:]
    row = await until(
        lambda: next((r for r in calls_of(store, "1884") if r["ended_at"]), None),
        20,
        "the call's record closed",
    )
    store.close()
    uri = stack.config.profiles["default"].targets[0].uri
    assert (row["outcome"], row["error_reason"], row["bot_uri"]) == ("resolved", None, uri), row
    assert (row["bot_seconds"] or 0.0) >= RINGING_BOT_TALK_MS / 1000 - 1, row
    log_text = (Path(info["root"]) / "app.log").read_text(errors="replace")
    assert TAKEN_OVER_DIALLING in log_text
