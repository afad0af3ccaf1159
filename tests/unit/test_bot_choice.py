"""The app's side of several bots, without Asterisk: health from ARI, no bot available,
limits released when a call's part with its bot ends (fake ARI, in-memory store)."""

from __future__ import annotations

import json

import pytest

from ari_app.ari import parse_event
from ari_app.calls.app import BridgeApp
from ari_app.config import Config, load_config
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri
from tests.fake_ari import channel_json as fake_channel_json

A, B = "sip:a@127.0.0.1:5080", "sip:b@127.0.0.1:5081"
APP = "botbridge"
TS = "2026-12-01T10:00:00.000+0000"


@pytest.fixture
def config() -> Config:
    return load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x"},
        overrides={
            "bot_health": {"qualify_frequency_seconds": 5},
            "profiles": {"default": {"bots": [{"uri": A, "max_concurrent_calls": 1}, {"uri": B}]}},
        },
    )


def channel_json(cid: str) -> dict[str, object]:
    return fake_channel_json(
        cid,
        name=f"PJSIP/carrier-{cid}",
        state="Ring",
        context="botbridge-inbound",
        exten="5551000",
        priority=2,
        app_data="",
        creationtime=TS,
    )


async def inbound(app: BridgeApp, cid: str) -> str:
    event = parse_event(
        {
            "type": "StasisStart",
            "application": APP,
            "timestamp": TS,
            "channel": channel_json(cid),
            "args": ["inbound", "available"],
        }
    )
    assert event is not None
    await app.handle(event)
    return app.sessions[cid].interaction_id


async def contact_status(app: BridgeApp, aor: str, status: str) -> None:
    event = parse_event(
        {
            "type": "ContactStatusChange",
            "application": APP,
            "timestamp": TS,
            "endpoint": {"technology": "PJSIP", "resource": aor, "state": "", "channel_ids": []},
            "contact_info": {"uri": "sip:x@h", "contact_status": status, "aor": aor},
        }
    )
    assert event is not None
    await app.handle(event)


async def test_health_is_read_at_connect_and_followed_from_events(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    ari.endpoint_state = {"botbridge-bot-1": "offline", "botbridge-bot-2": "online", "carrier": ""}
    app = BridgeApp(config, ari, store)
    await app.watch_bot_health()
    sources = ["endpoint:PJSIP/botbridge-bot-1", "endpoint:PJSIP/botbridge-bot-2"]
    assert ("subscribe", {"app": APP, "sources": sources}) in ari.calls
    assert app.bot_reachability() == {A: False, B: True}
    await contact_status(app, "botbridge-bot-1", "Reachable")
    assert app.bot_reachability() == {A: True, B: True}
    await contact_status(app, "botbridge-bot-2", "Unreachable")
    await contact_status(app, "voicebot", "Unreachable")  # not a health endpoint: ignored
    assert app.bot_reachability() == {A: True, B: False}


async def test_no_health_endpoint_means_no_request(store: InteractionStore) -> None:
    ari = FakeAri()
    app = BridgeApp(load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x"}), ari, store)
    await app.watch_bot_health()
    assert ari.calls == []


async def test_every_bot_unreachable_sends_the_caller_to_the_fallback_queue_undialled(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    app = BridgeApp(config, ari, store)
    await contact_status(app, "botbridge-bot-1", "Unreachable")
    await contact_status(app, "botbridge-bot-2", "Unreachable")
    iid = await inbound(app, "c1")
    assert not [c for c in ari.calls if c[0] == "create_channel"]
    assert ("continue_in_dialplan", {"channel_id": "c1", "context": "botbridge-queue",
                                     "extension": "s"}) in ari.calls  # fmt: skip
    await app.records.flush()
    row = store.get(iid) or {}
    assert (row["outcome"], row["error_reason"], row["queue"]) == (
        "bot_failed",
        "bot_unavailable",
        "agents-queue",
    )
    assert json.loads(row["bots_tried"] or "") == [
        {"uri": A, "result": "skipped_unreachable"},
        {"uri": B, "result": "skipped_unreachable"},
    ]


async def test_a_limit_frees_up_when_the_call_with_the_bot_ends(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    app = BridgeApp(config, ari, store)
    await inbound(app, "c1")
    await inbound(app, "c2")
    endpoints = [c[1]["endpoint"] for c in ari.calls if c[0] == "create_channel"]
    assert endpoints == [f"PJSIP/voicebot/{A}", f"PJSIP/voicebot/{B}"]  # A holds 1 at most
    assert app.bot_active_calls() == {A: 1, B: 1}
    gone = parse_event(
        {"type": "StasisEnd", "application": APP, "timestamp": TS, "channel": channel_json("c1")}
    )
    assert gone is not None
    await app.handle(gone)  # the caller hung up while A was ringing: abandoned
    assert app.bot_active_calls() == {A: 0, B: 1}
    await inbound(app, "c3")
    assert [c[1]["endpoint"] for c in ari.calls if c[0] == "create_channel"][-1] == (
        f"PJSIP/voicebot/{A}"
    )


async def test_a_leg_of_a_bot_the_call_moved_on_from_is_hung_up_when_it_answers(
    config: Config, store: InteractionStore
) -> None:
    ari = FakeAri()
    app = BridgeApp(config, ari, store)
    iid = await inbound(app, "c1")

    def bot_channel(cid: str) -> dict[str, object]:
        return {**channel_json(cid), "name": f"PJSIP/voicebot-{cid}"}

    busy = parse_event(
        {"type": "Dial", "application": APP, "timestamp": TS, "dialstatus": "BUSY",
         "peer": bot_channel(f"bot-{iid}")}
    )  # fmt: skip
    assert busy is not None
    await app.handle(busy)
    assert app.sessions["c1"].bot_channel_id == f"bot-{iid}-2"
    before = len(ari.calls)
    late = parse_event(
        {"type": "StasisStart", "application": APP, "timestamp": TS, "args": ["bot", iid],
         "channel": bot_channel(f"bot-{iid}")}
    )  # fmt: skip
    assert late is not None
    await app.handle(late)
    assert ari.calls[before:] == [("hangup", {"channel_id": f"bot-{iid}"})]
    assert app.sessions["c1"].state.value == "bot_dialling"
