"""The record's lifecycle without Asterisk: session transitions and reconciliation rules,
driven with a fake ARI client and an in-memory store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ari_app.ari import Channel, Event
from ari_app.calls.app import BridgeApp
from ari_app.calls.reconcile import APP_RESTARTED, orphan_bot_part
from ari_app.calls.session import CallSession
from ari_app.calls.states import CallState
from ari_app.config import Config, load_config
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, bridge
from tests.fake_ari import channel as fake_channel
from tests.records import NODE, stored


def channel(cid: str, app_name: str | None = "Stasis", name: str = "PJSIP/carrier-1") -> Channel:
    return fake_channel(cid, name=name, app_name=app_name)


@pytest.fixture
def config() -> Config:
    return load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STORE_NODE": NODE})


def open_record(store: InteractionStore, iid: str, state: str, **fields: Any) -> None:
    store.create(
        iid,
        profile="default",
        caller_channel=f"caller-{iid}",
        bot_channel=f"bot-{iid}",
        state=state,
        started_at=time.time() - 30,
        **fields,
    )


def make_app(config: Config, store: InteractionStore, ari: FakeAri) -> BridgeApp:
    return BridgeApp(config, ari, store)


# -- session: bot time and the end of the call ---------------------------------------------


def session_in(
    config: Config, store: InteractionStore, ari: FakeAri, state: CallState, **kw: Any
) -> CallSession:
    session = CallSession(
        ari,
        config,
        store,  # written through at once: the store is a record sink too
        config.profiles["default"],
        channel("caller-1"),
        interaction_id="i1",
        state=state,
        bot_channel_id="bot-i1",
        **kw,
    )
    store.create("i1", profile="default", caller_channel="caller-1", state=state.value)
    return session


async def test_bot_hang_up_charges_the_bot_time_and_the_end_waits_for_the_caller(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    answered = time.time() - 61.0
    session = session_in(config, store, ari, CallState.BOT_CONNECTED, bot_answered_at=answered)
    await session.bot_left()
    row = store.get("i1")
    assert row is not None
    assert row["outcome"] == "resolved" and row["ended_at"] is None  # the caller is still up
    assert row["bot_ended_at"] == pytest.approx(time.time(), abs=1)
    assert row["bot_seconds"] == pytest.approx(61.0, abs=1)
    assert row["billable_minutes"] == 2.0 and row["billing_rounding"] == "ceil_minute"
    await session.caller_ended()
    ended = store.get("i1")
    assert ended is not None and ended["ended_at"] >= ended["bot_ended_at"]
    first_end = ended["ended_at"]
    await session.caller_ended()  # a second notice changes nothing
    assert stored(store, "i1")["ended_at"] == first_end


async def test_a_bot_that_never_answered_costs_nothing(
    config: Config, store: InteractionStore
) -> None:
    session = session_in(config, store, FakeAri(), CallState.BOT_DIALLING)
    await session.bot_failed("bot_busy")
    row = store.get("i1")
    assert row is not None
    assert row["outcome"] == "bot_failed" and row["bot_seconds"] == 0.0
    assert row["billable_minutes"] == 0.0 and row["ended_at"] is None


async def test_caller_hang_up_ends_the_record_at_once(
    config: Config, store: InteractionStore
) -> None:
    session = session_in(
        config, store, FakeAri(), CallState.BOT_CONNECTED, bot_answered_at=time.time() - 5
    )
    await session.caller_gone()
    row = store.get("i1")
    assert row is not None and row["outcome"] == "abandoned"
    assert row["ended_at"] == pytest.approx(row["bot_ended_at"], abs=0.5)
    assert row["billable_minutes"] == 1.0


async def test_queued_caller_is_followed_to_the_agent_and_the_end(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    app = make_app(config, store, ari)
    session = session_in(config, store, ari, CallState.QUEUED)
    app.adopt(session)
    # our own bridge is not an agent; Queue()'s Dial ANSWER is
    session.bridge_id = "call-i1"
    await session.caller_entered_bridge(bridge("call-i1", "caller-1", "bot-i1"))
    assert stored(store, "i1")["agent_answered_at"] is None
    session.bridge_id = None
    dial = Event(
        "Dial",
        "botbridge",
        caller=channel("caller-1"),
        peer=channel("agent-7"),
        dialstatus="ANSWER",
    )
    await app.handle(dial)
    await app.records.flush()
    row = store.get("i1")
    assert row is not None and row["agent_answered_at"] and row["agent_channel"] == "agent-7"
    await app.handle(Event("ChannelDestroyed", "botbridge", channel=channel("caller-1"), cause=16))
    await app.records.flush()
    assert stored(store, "i1")["ended_at"] is not None
    assert app.sessions == {} and app._by_channel == {}


async def test_the_caller_is_followed_before_it_is_continued(
    config: Config, store: InteractionStore
) -> None:
    """Subscribed before it leaves Stasis, the caller's events keep coming in the queue (the
    agent's answer, the end); a call that never leaves Stasis costs no subscription."""
    ari = FakeAri()
    profile = config.profiles["default"]
    session = CallSession(ari, config, store, profile, channel("caller-1"), interaction_id="i1")

    await session.start()
    assert ari.called("subscribe") == []
    await session.bot_failed("bot_busy")
    names = [name for name, _ in ari.calls]
    assert names.index("subscribe") < names.index("continue_in_dialplan")
    assert ari.called("subscribe") == [{"app": "botbridge", "sources": ["channel:caller-1"]}]


# -- reconciliation at start -------------------------------------------------------------


async def test_orphan_without_outcome_is_marked_app_restarted(
    config: Config, store: InteractionStore
) -> None:
    answered = time.time() - 20
    open_record(store, "o1", "bot_connected", bot_answered_at=answered)
    ari = FakeAri([channel("bot-o1", name="PJSIP/voicebot-1")])  # the caller is gone
    app = make_app(config, store, ari)
    await app.reconcile(1)
    await app.records.flush()
    row = store.get("o1")
    assert row is not None
    assert row["outcome"] == "error" and row["state"] == "error"
    assert row["error_reason"] == APP_RESTARTED
    assert row["ended_at"] == row["reconciled_at"]
    # the bot leg was still up: released now, and its time runs until now
    # besides the probe channel that read the fail-open notes (none here)
    hung_up = [c for c in ari.called("hangup") if not c["channel_id"].startswith("probe-")]
    assert hung_up == [{"channel_id": "bot-o1"}]
    assert ari.called("destroy_bridge") == [{"bridge_id": "call-o1"}]
    assert row["bot_ended_at"] == row["ended_at"]
    assert row["bot_seconds"] == pytest.approx(20, abs=1) and row["billable_minutes"] == 1.0
    assert app.sessions == {}


async def test_orphan_with_an_outcome_keeps_it(config: Config, store: InteractionStore) -> None:
    open_record(
        store,
        "o2",
        "queued",
        outcome="escalated",
        error_reason="escalate_to_unknown",
        bot_answered_at=1.0,
        transfer_at=31.0,
        bot_ended_at=31.0,
        bot_seconds=30.0,
        billable_minutes=1.0,
    )
    app = make_app(config, store, FakeAri())
    await app.reconcile(1)
    await app.records.flush()
    row = store.get("o2")
    assert row is not None
    assert row["outcome"] == "escalated" and row["error_reason"] == "escalate_to_unknown"
    assert row["ended_at"] and row["reconciled_at"] and row["bot_seconds"] == 30.0


async def test_orphan_whose_bot_vanished_unseen_has_unknown_bot_time(
    config: Config, store: InteractionStore
) -> None:
    open_record(store, "o3", "bot_connected", bot_answered_at=time.time() - 100)
    app = make_app(config, store, FakeAri())
    await app.reconcile(1)
    await app.records.flush()
    row = store.get("o3")
    assert row is not None and row["outcome"] == "error"
    assert row["bot_seconds"] is None and row["billable_minutes"] is None
    assert row["bot_ended_at"] is None


async def test_only_this_nodes_records_and_legacy_ones_are_reconciled(
    config: Config, store: InteractionStore
) -> None:
    open_record(store, "mine", "bot_dialling")
    open_record(store, "theirs", "bot_dialling", node="node-b")
    open_record(store, "legacy", "bot_dialling", node=None)
    app = make_app(config, store, FakeAri())
    await app.reconcile(1)
    await app.records.flush()
    assert stored(store, "mine")["ended_at"] is not None
    assert stored(store, "legacy")["ended_at"] is not None
    assert stored(store, "theirs")["ended_at"] is None
    assert stored(store, "mine")["billable_minutes"] == 0.0


async def test_live_queued_caller_is_re_adopted_and_followed(
    config: Config, store: InteractionStore
) -> None:
    open_record(store, "q1", "queued", outcome="escalated")
    caller = channel("caller-q1", app_name="Queue")
    # the agent answered while the app was down: the caller is in Queue()'s bridge
    ari = FakeAri([caller], [bridge("b-1", "caller-q1", "agent-3")])
    app = make_app(config, store, ari)
    await app.reconcile(1)
    await app.records.flush()
    assert ari.called("subscribe") == [{"app": "botbridge", "sources": ["channel:caller-q1"]}]
    assert set(app.sessions) == {"caller-q1"}
    row = store.get("q1")
    assert row is not None and row["reconciled_at"] and row["ended_at"] is None
    assert row["agent_answered_at"] and row["agent_channel"] == "agent-3"
    await app.handle(Event("ChannelDestroyed", "botbridge", channel=caller, cause=16))
    await app.records.flush()
    assert stored(store, "q1")["ended_at"] is not None
    assert app.sessions == {}


async def test_live_caller_whose_dial_was_lost_goes_to_the_fallback_queue(
    config: Config, store: InteractionStore
) -> None:
    open_record(store, "d1", "bot_dialling")
    ari = FakeAri([channel("caller-d1"), channel("bot-d1", name="PJSIP/voicebot-1")])
    app = make_app(config, store, ari)
    await app.reconcile(1)
    await app.records.flush()
    row = store.get("d1")
    assert row is not None
    assert row["outcome"] == "bot_failed" and row["error_reason"] == APP_RESTARTED
    assert row["queue"] == "agents-queue" and row["ended_at"] is None
    assert {"channel_id": "bot-d1"} in ari.called("hangup")
    (moved,) = ari.called("continue_in_dialplan")
    assert (moved["channel_id"], moved["context"]) == ("caller-d1", "botbridge-queue")
    # the caller waited in the call's bridge (the bot is bridged before it is dialled)
    assert ari.called("destroy_bridge") == [{"bridge_id": "call-d1"}]


async def test_live_bot_call_whose_bot_is_gone_is_resolved(
    config: Config, store: InteractionStore
) -> None:
    open_record(store, "r1", "bot_connected", bot_answered_at=time.time() - 10)
    ari = FakeAri([channel("caller-r1")])
    app = make_app(config, store, ari)
    await app.reconcile(1)
    await app.records.flush()
    row = store.get("r1")
    assert row is not None and row["outcome"] == "resolved"
    assert row["bot_seconds"] is None  # ended unseen
    assert {"channel_id": "caller-r1"} in ari.called("hangup")


async def test_reconnect_ends_sessions_whose_caller_vanished(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    app = make_app(config, store, ari)
    session = session_in(
        config, store, ari, CallState.BOT_CONNECTED, bot_answered_at=time.time() - 3
    )
    app.adopt(session)
    await app.reconcile(2)
    await app.records.flush()
    row = store.get("i1")
    assert row is not None and row["outcome"] == "abandoned"
    assert row["ended_at"] and row["reconciled_at"]
    assert app.sessions == {} and app._by_channel == {}


@pytest.mark.parametrize(
    ("record", "alive_until", "expected"),
    [
        ({"bot_seconds": 5.0, "bot_answered_at": 1.0}, 100.0, {}),
        ({"bot_answered_at": None}, 100.0, {"bot_seconds": 0.0, "billable_minutes": 0.0}),
        ({"bot_answered_at": 10.0, "transfer_at": 40.0}, 100.0, {"bot_seconds": 30.0}),
        ({"bot_answered_at": 10.0, "bot_ended_at": 25.0}, None, {"bot_seconds": 15.0}),
        ({"bot_answered_at": 10.0}, 70.0, {"bot_seconds": 60.0, "billable_minutes": 1.0}),
        ({"bot_answered_at": 10.0}, None, {"billing_rounding": "ceil_minute"}),
    ],
)
def test_orphan_bot_part(
    record: dict[str, Any], alive_until: float | None, expected: dict[str, Any]
) -> None:
    got = orphan_bot_part(record, alive_until, "ceil_minute")
    assert {k: got[k] for k in expected} == expected
    if "bot_seconds" not in got:
        assert "bot_ended_at" not in got


# -- callers left waiting in the app (a StasisStart never handled) -------------------------


def waiting_caller(cid: str, app_data: str = "botbridge,inbound,open") -> Channel:
    return fake_channel(cid, context="botbridge-inbound", exten="5551000", app_data=app_data)


async def test_a_caller_waiting_unfollowed_is_taken_up_once(
    config: Config, store: InteractionStore
) -> None:
    """Its StasisStart went to the previous connection: reconciliation routes it now, and a
    StasisStart that does come later is not a second call."""
    caller = waiting_caller("stray-1")
    others = [
        waiting_caller("other-app", "someoneelse,inbound,open"),
        waiting_caller("a-bot-leg", "botbridge,bot,x"),
        fake_channel("in-queue", app_name="Queue"),
    ]
    ari = FakeAri([caller, *others])
    app = make_app(config, store, ari)
    await app.reconcile(1)
    await app.dispatcher.idle()
    assert set(app.sessions) == {"stray-1"}
    session = app.sessions["stray-1"]

    def bot_legs() -> list[dict[str, Any]]:  # not the probe reconciliation reads AstDB with
        return [c for c in ari.called("create_channel") if c["app_args"].startswith("bot,")]

    [bot] = bot_legs()
    assert bot["new_channel_id"] == session.bot_channel_id
    # the dialplan's business_hours argument is the one the bot is told
    uui = bot["variables"]["PJSIP_HEADER(add,User-to-User)"]
    assert b"business_hours=open".hex() in uui.lower()
    await app.handle(Event("StasisStart", "botbridge", channel=caller, args=("inbound", "open")))
    assert len(bot_legs()) == 1 and app.sessions["stray-1"] is session
    await app.records.flush()
    row = stored(store, session.interaction_id)
    assert row["caller_channel"] == "stray-1" and row["state"] == "bot_dialling"


async def test_a_draining_app_sends_a_caller_left_waiting_to_the_fallback_queue(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri([waiting_caller("late-1")])
    app = make_app(config, store, ari)
    app.draining = True
    await app._pick_up_strays()
    await app.dispatcher.idle()
    await app.records.flush()
    assert ari.called("create_channel") == [] and ari.called("dial") == []
    [row] = store.all()
    assert row["caller_channel"] == "late-1"
    assert row["outcome"] == "bypassed" and row["error_reason"] == "app_draining"
    assert row["queue"] == config.profiles["default"].fallback_queue
    [sent] = ari.called("continue_in_dialplan")
    assert sent["channel_id"] == "late-1" and sent["context"] == config.bridge.queue_context
