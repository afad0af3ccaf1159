"""The handover's parts that need no Asterisk (ari_app/calls/handover.py): the instance lock,
the successor holding events until the running instance let go, the replaced instance that
neither drains nor acts, and a call taken over while its bot is dialled. The whole handover
runs through `make restart` against a real Asterisk in
tests/integration/test_make_restart.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ari_app.ari import Event, EventStream
from ari_app.calls import handover as handover_module
from ari_app.calls.app import BridgeApp
from ari_app.calls.handover import LOCK_FILE, HandoverApp, InstanceLock
from ari_app.config import Config, load_config
from ari_app.main import run_app
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, bridge, channel, channel_json
from tests.harness import until
from tests.records import NODE, create, stored

APP = "botbridge"


def config() -> Config:
    return load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STORE_NODE": NODE})


def inbound(caller_id: str) -> Event:
    caller = channel(caller_id, app_name="Stasis", app_data=f"{APP},inbound")
    return Event("StasisStart", APP, channel=caller, args=("inbound",))


def dialling(store: InteractionStore, iid: str, uri: str) -> None:
    """The record of a call whose bot ``uri`` is being dialled on leg ``bot-<iid>``."""
    create(
        store,
        iid,
        profile="default",
        caller_channel=f"caller-{iid}",
        bot_channel=f"bot-{iid}",
        state="bot_dialling",
        started_at=time.time() - 2,
        bots_tried=[{"uri": uri, "result": None}],
    )


def talking(store: InteractionStore, iid: str) -> None:
    """The record of a call whose bot (leg ``bot-<iid>``) has been talking for 10 s."""
    now = time.time()
    create(
        store,
        iid,
        profile="default",
        caller_channel=f"caller-{iid}",
        bot_channel=f"bot-{iid}",
        state="bot_connected",
        started_at=now - 20,
        bot_answered_at=now - 10,
    )


def test_the_lock_is_held_by_one_instance_and_names_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "app.lock"
    first, second = InstanceLock(path), InstanceLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()  # another open file of the same process is refused too
    assert second.holder() == os.getpid()
    first.release()
    assert second.try_acquire()
    second.release()


async def test_a_successor_holds_events_until_the_running_instance_let_go(
    tmp_path: Path, store: InteractionStore
) -> None:
    running = InstanceLock(tmp_path / "app.lock")
    assert running.try_acquire()
    ari = FakeAri([])
    app = HandoverApp(
        config(), ari, store, lock=InstanceLock(tmp_path / "app.lock"), take_over=True
    )
    await app.reconcile(1)  # returns at once: the reader must keep reading
    app.dispatch(inbound("caller-new"))
    await app.dispatcher.idle()
    assert app.sessions == {} and not app.owning.is_set()
    assert ari.called("channels") == []  # nothing reconciled while the old one holds on

    running.release()
    await until(app.owning.is_set, 5, "the take-over")
    await app.dispatcher.idle()
    assert list(app.sessions) == ["caller-new"]  # the held StasisStart, handled now
    app.lock.release()


async def test_a_replaced_instance_neither_drains_nor_touches_its_calls(
    tmp_path: Path, store: InteractionStore
) -> None:
    talking(store, "a1")
    caller = channel("caller-a1", app_name="Stasis")
    ari = FakeAri([caller, channel("bot-a1", app_name="Stasis")])
    app = HandoverApp(config(), ari, store, lock=InstanceLock(tmp_path / "app.lock"))
    await app.reconcile(1)
    assert list(app.sessions) == ["caller-a1"]
    requests = len(ari.calls)

    app.dispatch(Event("ApplicationReplaced", APP))
    await app.drain()  # SIGTERM while replaced
    await app.records.flush()
    assert app.replaced and not app.draining
    assert ari.calls[requests:] == []  # no hang-up, no queue, nothing
    assert stored(store, "a1")["state"] == "bot_connected"


async def test_a_call_taken_over_while_its_bot_is_dialled_goes_on_with_that_bot(
    store: InteractionStore,
) -> None:
    """A crash fails such a call over to the fallback queue (the dial's outcome is lost); a
    handover leaves the leg's next events to carry it on: the bot's answer connects it."""
    cfg = config()
    uri = cfg.profiles["default"].targets[0].uri
    for handover in (False, True):
        iid = f"d{int(handover)}"
        dialling(store, iid, uri)
        bot = channel(f"bot-{iid}", app_name="Stasis")
        ari = FakeAri(
            [channel(f"caller-{iid}", app_name="Stasis"), bot],
            bridges=[bridge(f"call-{iid}", f"caller-{iid}", f"bot-{iid}")],
        )
        app = BridgeApp(cfg, ari, store)
        await app.reconcile(1, handover=handover)
        await app.handle(Event("Dial", APP, peer=bot, dialstatus="ANSWER"))
        await app.records.flush()
        row = stored(store, iid)
        if handover:
            assert (row["state"], row["outcome"], row["bot_uri"]) == ("bot_connected", None, uri)
            assert app.bot_active_calls()[uri] == 1
            assert ari.called("continue_in_dialplan") == []
        else:
            assert (row["outcome"], row["error_reason"]) == ("bot_failed", "app_restarted")


async def test_a_plain_run_refuses_to_start_beside_a_running_instance(tmp_path: Path) -> None:
    """Two instances taking events in turn would each act on calls the other owns: without
    --take-over a second instance stops before it opens anything."""
    cfg = load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STATE_DIR": str(tmp_path)})
    running = InstanceLock(tmp_path / LOCK_FILE)
    assert running.try_acquire()
    with pytest.raises(SystemExit, match=r"another instance \(pid \d+\) .* --take-over"):
        await run_app(cfg)
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]  # no store opened
    running.release()


async def test_a_replaced_stream_reads_its_connection_to_the_end_and_never_reconnects() -> None:
    """A connect would register the application again and replace the successor: once told
    to stop reconnecting, the stream still hands over what its connection brings, then its
    run ends with that connection."""
    replaced = json.dumps({"type": "ApplicationReplaced", "application": APP})
    late = json.dumps(
        {
            "type": "ChannelDestroyed",
            "application": APP,
            "cause": 16,
            "cause_txt": "Normal Clearing",
            "channel": channel_json("c"),
        }
    )

    async def asterisk(ws: ServerConnection) -> None:
        await ws.send(replaced)
        await ws.send(late)  # the event that crossed the swap
        await ws.close()

    async with serve(asterisk, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = EventStream(f"http://127.0.0.1:{port}/ari", "user", "secret", APP)
        seen: list[str] = []

        def on_event(event: Event) -> None:
            seen.append(event.type)
            if event.type == "ApplicationReplaced":
                stream.stop_reconnecting()

        await asyncio.wait_for(stream.run(on_event), 10)
    assert stream.connects == 1
    assert seen == ["ApplicationReplaced", "ChannelDestroyed"]


async def test_a_take_over_with_nothing_running_is_a_plain_start(
    tmp_path: Path, store: InteractionStore
) -> None:
    """No instance holds the lock when the successor starts: nobody let go, so an open
    record is a crash's (a bot being dialled is failed over), and nothing is held."""
    uri = config().profiles["default"].targets[0].uri
    dialling(store, "c1", uri)
    ari = FakeAri([channel("caller-c1", app_name="Stasis"), channel("bot-c1", app_name="Stasis")])
    lock = InstanceLock(tmp_path / LOCK_FILE)
    app = HandoverApp(config(), ari, store, lock=lock, take_over=True)
    assert app.owning.is_set() and not app.take_over
    await app.reconcile(1)
    await app.records.flush()
    assert (stored(store, "c1")["outcome"], stored(store, "c1")["error_reason"]) == (
        "bot_failed",
        "app_restarted",
    )
    assert lock.holder() == os.getpid()
    lock.release()


async def test_a_drain_under_way_ends_when_a_successor_comes(
    tmp_path: Path, store: InteractionStore
) -> None:
    """SIGTERM, then a successor registers before the drain ran out: the call with the bot
    is the successor's, and is never handed to the fallback queue (drain_timeout)."""
    cfg = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STORE_NODE": NODE},
        overrides={"bridge": {"drain_seconds": 0.5}},
    )
    talking(store, "b1")
    ari = FakeAri([channel("caller-b1", app_name="Stasis"), channel("bot-b1", app_name="Stasis")])
    app = HandoverApp(cfg, ari, store, lock=InstanceLock(tmp_path / LOCK_FILE))
    await app.reconcile(1)
    draining = asyncio.create_task(app.drain())
    await until(lambda: app.draining, 5, "the drain under way")
    app.dispatch(Event("ApplicationReplaced", APP))
    with pytest.raises(asyncio.CancelledError):
        await draining
    await asyncio.sleep(0.6)  # past drain_seconds
    await app.records.flush()
    assert ari.called("continue_in_dialplan") == []
    assert stored(store, "b1")["state"] == "bot_connected"


async def test_a_running_instance_that_does_not_let_go_is_killed(
    tmp_path: Path, store: InteractionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder of the lock never lets go (stuck, or another program): after
    HANDOVER_SECONDS the successor kills it (its pid is in the lock file) and reconciles as
    after a crash: a call whose bot was being dialled goes to the fallback queue."""
    monkeypatch.setattr(handover_module, "HANDOVER_SECONDS", 0.5)
    path = tmp_path / LOCK_FILE
    script = (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); "
        "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write(f'{os.getpid()}\\n'); "
        "f.flush(); print('locked', flush=True); time.sleep(60)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            uri = config().profiles["default"].targets[0].uri
            dialling(store, "k1", uri)
            ari = FakeAri([channel("caller-k1", app_name="Stasis"), channel("bot-k1")])
            app = HandoverApp(config(), ari, store, lock=InstanceLock(path), take_over=True)
            assert app.take_over
            await app.reconcile(1)
            await until(app.owning.is_set, 10, "the take-over")
            assert holder.wait(5) == -signal.SIGKILL
            await app.records.flush()
            row = stored(store, "k1")
            assert (row["outcome"], row["error_reason"]) == ("bot_failed", "app_restarted")
            app.lock.release()
        finally:
            if holder.poll() is None:
                holder.kill()
