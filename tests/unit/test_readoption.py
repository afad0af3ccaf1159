"""A call re-adopted after a restart is built with the app's services like a new one: with
its bot still talking, it counts against the bot's limit again and the bot's BYE context
([bye_context]) still reaches it. (It did neither while reconciliation built its session
with part of the services.)"""

from __future__ import annotations

import time

from ari_app.ari import Event
from ari_app.calls.app import BridgeApp
from ari_app.calls.bye_context import ByeContexts
from ari_app.config import load_config
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, channel
from tests.records import NODE, create, stored
from tests.unit.test_hep import BYE, hep
from tests.unit.test_hep import PASSWORD as HEP_PASSWORD
from tests.unit.test_hep import SIP_PORT as HEP_SIP_PORT

# the bot dialog's Call-ID, as the HEP copy of its BYE carries it (tests/unit/test_hep.py)
BYE_CALL_ID = "call-1@127.0.0.1"


async def test_a_call_re_adopted_with_its_bot_keeps_its_bot_limit_and_bye_context(
    store: InteractionStore,
) -> None:
    """Re-adopted after a restart with the bot still talking, a call counts against its
    bot's limit again (released when the bot hangs up) and the bot's BYE context still
    reaches it: escalate_to on the BYE escalates the call as for a new one."""
    config = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STORE_NODE": NODE},
        overrides={"bye_context": {"enabled": True}},
    )
    uri = config.profiles["default"].targets[0].uri
    create(
        store,
        "a1",
        profile="default",
        caller_channel="caller-a1",
        bot_channel="bot-a1",
        state="bot_connected",
        started_at=time.time() - 30,
        bot_answered_at=time.time() - 10,
        bot_uri=uri,
    )
    bot = channel("bot-a1", name="PJSIP/voicebot-1", app_name="Stasis")
    caller = channel("caller-a1", app_name="Stasis")
    ari = FakeAri([caller, bot], variables={"CHANNEL(pjsip,call-id)": BYE_CALL_ID})
    byes = ByeContexts(config.bye_context, HEP_PASSWORD, (HEP_SIP_PORT,))
    app = BridgeApp(config, ari, store, bye_contexts=byes)
    await app.reconcile(1)
    assert app.bot_active_calls()[uri] == 1

    byes.datagram_received(hep(BYE), ("127.0.0.1", HEP_SIP_PORT))  # escalate_to=billing
    await app.handle(Event("ChannelDestroyed", "botbridge", channel=bot, cause=16))
    await app.records.flush()
    row = stored(store, "a1")
    assert (row["outcome"], row["escalate_to"]) == ("escalated", "billing")
    assert row["context"] == {"escalate_to": "billing"}
    assert app.bot_active_calls()[uri] == 0
