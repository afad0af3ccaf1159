"""Warm transfer's checks (calls/consult.py) without Asterisk: which consult is taken, what
the app asks of Asterisk for it, and a consult let go when its call leaves the bot. The
call flow itself is tested on a real Asterisk (tests/integration/test_warm_transfer.py)."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from ari_app.ari import AriError, Channel, Event
from ari_app.calls import consult
from ari_app.calls.app import BridgeApp
from ari_app.calls.session import CallSession
from ari_app.calls.states import CallState
from ari_app.config import load_config
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, channel

IID = "0123456789abcdef0123456789abcdef"


def arg(name: str, value: str) -> str:
    return f"hdr.{name}=" + base64.b64encode(f":{value}".encode()).decode()


CONTEXT = f"{b'escalate_to=billing'.hex()};encoding=hex"
ARGS = ("consult", arg("X-Interaction-Id", IID), arg("User-to-User", CONTEXT))


def app_with_call(store: InteractionStore, **profile: object) -> tuple[BridgeApp, CallSession]:
    config = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x"},
        overrides={"profiles": {"default": {"warm_transfer": True, **profile}}},
    )
    caller = channel("caller-1", app_name="Stasis")
    app = BridgeApp(config, FakeAri([caller]), store)
    session = app.session_for(caller)
    session.interaction_id = IID
    session.state = CallState.BOT_CONNECTED
    session.bot_channel_id = f"bot-{IID}"
    session.bridge_id = f"call-{IID}"
    app.adopt(session)
    return app, session


def test_consult_headers_are_read_from_the_stasis_arguments() -> None:
    headers = consult.consult_headers(
        [*ARGS[1:], arg("X-Empty", ""), "hdr.Bad=!!!", "plain", "hdr.NoEquals"]
    )
    assert headers == {"X-Interaction-Id": IID, "User-to-User": CONTEXT}


async def test_a_consult_of_a_call_with_its_bot_is_rung_and_routed(
    store: InteractionStore,
) -> None:
    app, session = app_with_call(store)
    ari = app.ari
    assert isinstance(ari, FakeAri)
    call = channel("1.4", name="PJSIP/voicebot-00000002")
    await app.handle(Event("StasisStart", "botbridge", channel=call, args=ARGS))
    assert session.consult is not None and session.consults == 1
    assert ari.called("ring") == [{"channel_id": "1.4"}]
    (handling,) = [v for v in ari.called("set_vars") if v["channel_id"] == f"bot-{IID}"]
    assert handling["variables"] == {"PJSIP_TRANSFER_HANDLING()": "ari-only"}
    (leg,) = ari.called("create_channel")
    assert leg["endpoint"] == "Local/s@botbridge-consult-queue/n"
    assert leg["new_channel_id"] == f"consult-{IID}-1"
    assert leg["variables"]["BOTBRIDGE_QUEUE"] == "billing-queue"
    assert leg["variables"]["BOTBRIDGE_CONSULT_TIMEOUT"] == "60"
    assert session.escalations[-1]["via"] == "consult"
    assert session.escalations[-1]["target"] == "billing-queue"


@pytest.mark.parametrize(
    ("setup", "name", "reason"),
    [
        ({"warm_transfer": False}, "PJSIP/voicebot-2", "warm_transfer_off"),
        ({}, "PJSIP/carrier-2", "not_from_bot_endpoint"),
        ({"max_consults": 1}, "PJSIP/voicebot-2", "max_consults"),
    ],
)
async def test_a_consult_is_refused_with_its_reason(
    store: InteractionStore, setup: dict[str, object], name: str, reason: str
) -> None:
    app, session = app_with_call(store, **setup)
    if reason == "max_consults":
        session.consults = 1
    call = channel("1.4", name=name)
    assert consult.refusal(session, call) == reason
    await app.handle(Event("StasisStart", "botbridge", channel=call, args=ARGS))
    assert session.consult is None
    ari = app.ari
    assert isinstance(ari, FakeAri)
    assert ari.called("hangup") == [{"channel_id": "1.4", "reason": "rejected"}]
    assert not ari.called("create_channel")


async def test_a_consult_naming_no_call_is_refused(store: InteractionStore) -> None:
    app, session = app_with_call(store)
    call = channel("1.4", name="PJSIP/voicebot-2")
    other = ("consult", arg("X-Interaction-Id", "f" * 32))
    await app.handle(Event("StasisStart", "botbridge", channel=call, args=other))
    ari = app.ari
    assert isinstance(ari, FakeAri)
    assert ari.called("hangup") == [{"channel_id": "1.4", "reason": "rejected"}]
    assert session.consult is None


async def test_a_refer_while_consulting_is_declined_unless_it_replaces_the_consult(
    store: InteractionStore,
) -> None:
    app, session = app_with_call(store)
    ari = app.ari
    assert isinstance(ari, FakeAri)
    call = channel("1.4", name="PJSIP/voicebot-2")
    await app.handle(Event("StasisStart", "botbridge", channel=call, args=ARGS))
    bot = channel(f"bot-{IID}", name="PJSIP/voicebot-1")
    foreign = channel("other-call", name="PJSIP/voicebot-7")
    refer = Event("ChannelTransfer", "botbridge", channel=bot, transfer_target=foreign)
    await app.handle(refer)
    assert ari.called("transfer_progress") == [
        {"channel_id": f"bot-{IID}", "state": "channel_declined"}
    ]
    # the consult itself, before the agent answered: declined too
    await app.handle(Event("ChannelTransfer", "botbridge", channel=bot, transfer_target=call))
    assert ari.called("transfer_progress")[-1]["state"] == "channel_declined"
    assert session.state is CallState.BOT_CONNECTED
    # the echo of the app's own transfer_progress changes nothing
    echo = Event("ChannelTransfer", "botbridge", channel=bot, transfer_target=call, state="x")
    await app.handle(echo)
    assert len(ari.called("transfer_progress")) == 2


async def test_a_consult_is_let_go_when_its_caller_hangs_up(store: InteractionStore) -> None:
    app, session = app_with_call(store)
    ari = app.ari
    assert isinstance(ari, FakeAri)
    call = channel("1.4", name="PJSIP/voicebot-2")
    await app.handle(Event("StasisStart", "botbridge", channel=call, args=ARGS))
    await app.handle(Event("StasisEnd", "botbridge", channel=session.caller))
    hung_up = {args["channel_id"] for args in ari.called("hangup")}
    assert {"1.4", f"consult-{IID}-1"} <= hung_up
    assert session.consult is not None and session.consult.ended
    assert session.escalations[-1]["result"] == "caller_abandoned"


class FailingAri(FakeAri):
    """Asterisk refusing to make the consult's agent leg (HTTP 500)."""

    async def create_channel(self, endpoint: str, app: str, **kwargs: object) -> Channel:
        raise AriError(500, "POST", "/channels/create", "Allocation failed")


async def test_a_consult_whose_set_up_fails_ends_and_leaves_the_caller_with_its_bot(
    store: InteractionStore,
) -> None:
    """An ARI fault while the consult is set up ends the consult (480 to the bot), puts the
    bot leg back in core mode and leaves the caller with its bot: never the fail-safe's
    fallback queue."""
    app, session = app_with_call(store)
    ari = FailingAri([session.caller])
    app.services = replace(app.services, ari=ari)
    session.services = app.services
    call = channel("1.4", name="PJSIP/voicebot-00000002")
    await app.handle(Event("StasisStart", "botbridge", channel=call, args=ARGS))
    assert session.state is CallState.BOT_CONNECTED
    assert session.consult is not None and session.consult.ended
    assert {"channel_id": "1.4", "reason": "no_answer"} in ari.called("hangup")
    back = [v["variables"] for v in ari.called("set_vars") if v["channel_id"] == f"bot-{IID}"]
    assert back[-1] == {"PJSIP_TRANSFER_HANDLING()": "core"}
    assert not ari.called("continue_in_dialplan")  # the caller was not sent to a queue
    assert session.escalations[-1]["result"] == "no_agents"
