"""A caller back from its queue without an agent, decided by the session (requests recorded by
the fake ARI; the wire itself is tests/integration/test_handoff.py)."""

from __future__ import annotations

import time
from pathlib import Path

from ari_app.calls.services import CallServices
from ari_app.calls.session import CallSession
from ari_app.calls.states import CallState, Trigger
from ari_app.calls.transfer import TransferDecision
from ari_app.config import Config, load_config
from ari_app.outcomes import Outcome
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, channel
from tests.records import WriteThrough, create, stored

IID = "0123456789abcdef0123456789abcdef"
CALLER = "caller-1"
FIRST_BOT_SECONDS = 10.0
SECOND_BOT_SECONDS = 5.0


def _config(tmp_path: Path, profile: str = "") -> Config:
    config_file = tmp_path / "c.toml"
    config_file.write_text("[profiles.default]\n" + profile)
    env = {
        "BOTBRIDGE_STATE_DIR": str(tmp_path),
        "BOTBRIDGE_CONFIG": str(config_file),
        "BOTBRIDGE_ARI_PASSWORD": "x",
    }
    return load_config(env=env)


class Outcomes:
    """The metrics' view: each outcome as the session reports it."""

    def __init__(self) -> None:
        self.counted: list[str] = []

    def outcome(self, outcome: str) -> None:
        self.counted.append(outcome)

    def transfer_handled(self, seconds: float) -> None:
        pass

    def agent_answered(self, queue: str, agent: str) -> None:
        pass


def _session(
    config: Config, store: InteractionStore, ari: FakeAri, observer: Outcomes | None = None
) -> CallSession:
    create(store, IID, profile="default", caller_channel=CALLER, state="queued")
    return CallSession(
        CallServices(ari=ari, config=config, records=WriteThrough(store), observer=observer),
        config.profiles["default"],
        channel(CALLER),
        interaction_id=IID,
        state=CallState.BOT_CONNECTED,
        availability="available",
    )


async def _queued(session: CallSession, queue: str = "agents-queue") -> None:
    """The first bot, answered FIRST_BOT_SECONDS ago, escalated: the caller is in ``queue``."""
    session.bots.count = session.bot_dialogs = 1  # bot-<iid> was dialled and answered
    session.bot_answered_at = time.time() - FIRST_BOT_SECONDS
    session._fire(Trigger.REFER_RECEIVED, transfer_at=time.time())
    await session.send_to_queue(TransferDecision(queue=queue), Outcome.ESCALATED, via="refer")


async def test_a_shed_caller_back_from_its_queue_is_hung_up(
    tmp_path: Path, store: InteractionStore
) -> None:
    ari = FakeAri()
    session = _session(_config(tmp_path), store, ari)
    session.state = CallState.QUEUED  # shed by admission control: no attempt of ours
    await session.caller_entered(["queue_ended", "TIMEOUT"])
    assert ari.called("hangup") == [{"channel_id": CALLER}]
    assert session.state is CallState.QUEUED


async def test_a_status_that_is_no_failure_ends_the_call(
    tmp_path: Path, store: InteractionStore
) -> None:
    ari = FakeAri()
    session = _session(_config(tmp_path), store, ari)
    await _queued(session)
    await session.caller_entered(["queue_ended", "CONTINUE"])
    assert ari.called("hangup") == [{"channel_id": CALLER}]
    assert session.escalations[-1]["result"] is None


async def test_the_hangup_policy_ends_the_call_at_the_first_failure(
    tmp_path: Path, store: InteractionStore
) -> None:
    ari = FakeAri()
    session = _session(_config(tmp_path, 'on_escalation_failure = "hangup"\n'), store, ari)
    await _queued(session)
    await session.caller_entered(["queue_ended", "FULL"])
    assert session.state is CallState.ESCALATION_FAILED
    assert ari.called("hangup") == [{"channel_id": CALLER}]
    assert not ari.called("create_channel")
    row = stored(store, IID)
    assert row["outcome"] == "escalation_failed" and row["state"] == "escalation_failed"
    assert '"result": "full"' in (row.get("escalations") or "")


async def test_a_return_makes_a_new_leg_in_a_new_bridge_with_hold_music(
    tmp_path: Path, store: InteractionStore
) -> None:
    ari = FakeAri()
    session = _session(_config(tmp_path), store, ari)
    await _queued(session, "billing-queue")
    await session.caller_entered(["queue_ended", "LEAVEEMPTY"])
    assert session.state is CallState.BOT_DIALLING
    bridge = f"call-{IID}-r1"
    assert [c["bridge_id"] for c in ari.called("create_bridge")] == [bridge]
    assert ari.called("start_bridge_moh") == [{"bridge_id": bridge, "moh_class": "botbridge"}]
    (created,) = ari.called("create_channel")
    assert created["new_channel_id"] == f"bot-{IID}-2"
    uui = created["variables"]["PJSIP_HEADER(add,User-to-User)"]
    assert bytes.fromhex(uui.split(";")[0]) == (
        b"business_hours=available;escalation=failed;reason=no_agents;queue=billing-queue"
    )
    assert created["variables"]["PJSIP_HEADER(add,X-Interaction-Id)"] == IID
    assert stored(store, IID)["outcome"] == "escalation_failed"


async def test_the_returned_bot_ending_the_call_is_a_failed_escalation_billed_whole(
    tmp_path: Path, store: InteractionStore
) -> None:
    ari, outcomes = FakeAri(), Outcomes()
    session = _session(_config(tmp_path), store, ari, outcomes)
    await _queued(session)
    await session.caller_entered(["queue_ended", "TIMEOUT"])
    await session.bot_dial_result("ANSWER")
    assert ari.called("stop_bridge_moh") == [{"bridge_id": f"call-{IID}-r1"}]
    session.bot_answered_at = time.time() - SECOND_BOT_SECONDS
    await session.bot_left()  # the returned bot hung up: no agent ever took the caller
    row = stored(store, IID)
    assert row["outcome"] == "escalation_failed" and row["state"] == "resolved"
    assert row["bot_dialogs"] == 2
    total = FIRST_BOT_SECONDS + SECOND_BOT_SECONDS
    assert row["bot_seconds"] is not None and abs(row["bot_seconds"] - total) < 0.5
    assert row["billable_minutes"] == 1.0  # the total rounded once (ceil_minute)
    # the metrics: the escalation, then its failure; the bot's ending adds nothing
    assert outcomes.counted == ["escalated", "escalation_failed"]
