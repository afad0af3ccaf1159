"""Pure parts of the call flow: routing, transfer decisions, variables, the state machine."""

from __future__ import annotations

import re

import pytest

from ari_app.calls.routing import profile_for, queue_for
from ari_app.calls.services import availability_from_queue, dialstatus_for_cause
from ari_app.calls.states import (
    HANDED_OFF,
    IN_PROGRESS,
    CallState,
    InvalidTransition,
    Trigger,
    bot_part_ends,
    entry_outcome,
    next_state,
)
from ari_app.calls.transfer import ATTENDED_TRANSFER_IGNORED, caller_variables, decide_transfer
from ari_app.config import load_config
from ari_app.outcomes import Outcome

CONFIG = load_config(
    env={"BOTBRIDGE_ARI_PASSWORD": "x"},
    overrides={
        "profiles": {
            "sales": {
                "bot_endpoint": "salesbot",
                "answer_timeout_seconds": 5,
                "fallback_queue": "billing-queue",
                "default_queue": "billing-queue",
                "availability_queue": "billing-queue",
            }
        }
    },
)
DEFAULT = CONFIG.profiles["default"]


def refer_to(payload_hex: str, *extra: str) -> str:
    headers = "&".join([*extra, f"User-to-User={payload_hex}%3Bencoding%3Dhex"])
    return f"<sip:escalation@127.0.0.1?{headers}>"


@pytest.mark.parametrize(
    ("dialled", "profile"),
    [
        ("5551000", "default"),
        ("+15551000", "default"),
        ("", "default"),
    ],
)
def test_unmatched_numbers_use_the_default_profile(dialled: str, profile: str) -> None:
    assert profile_for(CONFIG, dialled).name == profile


def test_first_matching_route_wins() -> None:
    from msgspec.structs import replace

    from ari_app.config import Route

    config = replace(CONFIG, routes=(Route("_8X.", "sales"), Route("_X.", "default")))
    assert profile_for(config, "8123").name == "sales"
    assert profile_for(config, "5123").name == "default"
    assert profile_for(config, "abc").name == "default"


@pytest.mark.parametrize(
    ("escalate_to", "queue", "reason"),
    [
        ("agents-queue", "agents-queue", None),
        ("billing", "billing-queue", None),
        ("sales", "agents-queue", "escalate_to_unknown"),
        (None, "agents-queue", "escalate_to_missing"),
        ("", "agents-queue", "escalate_to_missing"),
        ("billing-queue", "agents-queue", "escalate_to_unknown"),  # a queue name is not a key
    ],
)
def test_queue_comes_only_from_the_routing_map(
    escalate_to: str | None, queue: str, reason: str | None
) -> None:
    decision = queue_for(CONFIG, DEFAULT, escalate_to)
    assert (decision.queue, decision.reason) == (queue, reason)


@pytest.mark.parametrize(
    ("refer", "headers", "queue", "error", "escalate_to"),
    [
        (refer_to(b"escalate_to=agents-queue".hex()), {}, "agents-queue", None, "agents-queue"),
        (refer_to(b"escalate_to=billing;order=7".hex()), {}, "billing-queue", None, "billing"),
        (
            "<sip:escalation@h>",
            {"User-to-User": b"escalate_to=billing".hex() + ";encoding=hex"},
            "billing-queue",
            None,
            "billing",
        ),
        (
            "<sip:escalation@h>",
            {"x-user-to-user": "escalate_to=billing"},
            "billing-queue",
            None,
            "billing",
        ),
        ("<sip:escalation@h>", {}, "agents-queue", "context_missing", None),
        (None, {}, "agents-queue", "context_missing", None),
        (refer_to("zz"), {}, "agents-queue", "context_malformed", None),
        (refer_to("abc"), {}, "agents-queue", "context_malformed", None),
        (refer_to("fffe"), {}, "agents-queue", "context_not_utf8", None),
        (
            refer_to(("escalate_to=billing;x=" + "y" * 300).encode().hex()),
            {},
            "agents-queue",
            "context_too_large",
            None,
        ),
        (refer_to(b"note=hello".hex()), {}, "agents-queue", "escalate_to_missing", None),
        (
            refer_to(b"escalate_to=billing".hex(), "Replaces=a%40b%3Bto-tag%3D1%3Bfrom-tag%3D2"),
            {},
            "billing-queue",
            ATTENDED_TRANSFER_IGNORED,
            "billing",
        ),
        (
            refer_to(b"escalate_to=billing".hex(), "replaces="),
            {},
            "billing-queue",
            ATTENDED_TRANSFER_IGNORED,
            "billing",
        ),
        # an escaped control character in the user part no longer spoils a valid context
        (
            refer_to(b"escalate_to=billing".hex()).replace("escalation@", "esc%01@"),
            {},
            "billing-queue",
            None,
            "billing",
        ),
        # a Refer-To that does not parse falls to the default queue, with the reason
        ("<sip:escalation@h", {}, "agents-queue", "context_malformed", None),
        (
            "<sip:esc%zz@h>",
            {"User-to-User": "escalate_to=billing"},
            "agents-queue",
            "context_malformed",
            None,
        ),
    ],
)
def test_decide_transfer(
    refer: str | None,
    headers: dict[str, str],
    queue: str,
    error: str | None,
    escalate_to: str | None,
) -> None:
    decision = decide_transfer(CONFIG, DEFAULT, refer, headers)
    assert (decision.queue, decision.error, decision.escalate_to) == (queue, error, escalate_to)


def test_refer_to_context_wins_over_the_refer_header() -> None:
    decision = decide_transfer(
        CONFIG,
        DEFAULT,
        refer_to(b"escalate_to=billing".hex()),
        {"User-to-User": "escalate_to=agents-queue"},
    )
    assert decision.queue == "billing-queue"


def test_caller_variables_are_safe_and_complete() -> None:
    hostile = b"escalate_to=billing;note=${SHELL(id)}|a,b\"'\\"
    decision = decide_transfer(CONFIG, DEFAULT, refer_to(hostile.hex()), {})
    variables = caller_variables("0" * 32, DEFAULT, decision, "escalated")
    assert variables["BOTBRIDGE_QUEUE"] == "billing-queue"
    assert variables["BOTBRIDGE_OUTCOME"] == "escalated"
    assert variables["BOTBRIDGE_CTX_ESCALATE_TO"] == "billing"
    assert variables["BOTBRIDGE_UUI"].endswith(";encoding=hex")
    assert bytes.fromhex(variables["BOTBRIDGE_UUI"].split(";")[0]).startswith(b"escalate_to=")
    # the UUI header value is hex plus its parameter: nothing else can appear in it
    assert re.fullmatch(r"[0-9a-f]+;encoding=hex", variables.pop("BOTBRIDGE_UUI"))
    for name, value in variables.items():
        assert name.startswith("BOTBRIDGE_") and name.replace("_", "").isalnum()
        for bad in "${}[],|\"'\\();\n":
            assert bad not in value, (name, value)


def test_variables_of_a_failed_context_say_why() -> None:
    decision = decide_transfer(CONFIG, DEFAULT, refer_to("zz"), {})
    variables = caller_variables("1" * 32, DEFAULT, decision, "escalated")
    assert variables["BOTBRIDGE_ERROR"] == "context_malformed"
    assert variables["BOTBRIDGE_UUI"] == ""
    assert variables["BOTBRIDGE_QUEUE"] == "agents-queue"


@pytest.mark.parametrize(
    ("logged", "ready", "value"),
    [
        (2, 1, "available"),
        (2, 0, "busy"),
        (0, 0, "closed"),
        (1, 1, "available"),
    ],
)
def test_availability_from_queue(logged: int, ready: int, value: str) -> None:
    assert availability_from_queue(logged, ready) == value


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        (17, "busy"),
        (19, "noanswer"),
        (18, "noanswer"),
        (3, "chanunavail"),
        (34, "congestion"),
        (21, "congestion"),
        (None, "congestion"),
    ],
)
def test_dialstatus_for_cause(cause: int | None, status: str) -> None:
    assert dialstatus_for_cause(cause) == status


# what moves a queued caller on when its queue ends without an agent (Stasis queue_ended)
QUEUE_FAILURE_TRIGGERS = {Trigger.BOT_RETURNED, Trigger.CALLER_ROUTED, Trigger.ESCALATION_ENDED}


def test_no_trigger_moves_a_call_the_app_has_handed_off() -> None:
    for state in HANDED_OFF:
        for trigger in Trigger:
            if state is CallState.QUEUED and trigger in QUEUE_FAILURE_TRIGGERS:
                continue
            with pytest.raises(InvalidTransition):
                next_state(state, trigger)


@pytest.mark.parametrize(
    ("current", "trigger", "new"),
    [
        (CallState.STARTED, Trigger.BOT_DIALLED, CallState.BOT_DIALLING),
        (CallState.BOT_DIALLING, Trigger.BOT_ANSWERED, CallState.BOT_CONNECTED),
        (CallState.BOT_DIALLING, Trigger.BOT_FAILED, CallState.BOT_FAILED),
        (CallState.BOT_FAILED, Trigger.CALLER_ROUTED, CallState.QUEUED),
        (CallState.BOT_CONNECTED, Trigger.REFER_RECEIVED, CallState.TRANSFERRING),
        (CallState.BOT_CONNECTED, Trigger.BOT_HUNG_UP, CallState.RESOLVED),
        (CallState.TRANSFERRING, Trigger.CALLER_ROUTED, CallState.QUEUED),
        (CallState.TRANSFERRING, Trigger.CALLER_HUNG_UP, CallState.ABANDONED),
        # the queue ended without an agent: a new bot dialog, the overflow queue, the end
        (CallState.QUEUED, Trigger.BOT_RETURNED, CallState.BOT_DIALLING),
        (CallState.QUEUED, Trigger.CALLER_ROUTED, CallState.QUEUED),
        (CallState.QUEUED, Trigger.ESCALATION_ENDED, CallState.ESCALATION_FAILED),
    ],
)
def test_valid_transitions(current: CallState, trigger: Trigger, new: CallState) -> None:
    assert next_state(current, trigger) is new


@pytest.mark.parametrize(
    ("current", "trigger"),
    [
        (CallState.STARTED, Trigger.CALLER_ROUTED),
        (CallState.BOT_DIALLING, Trigger.BOT_HUNG_UP),
        (CallState.BOT_CONNECTED, Trigger.BOT_FAILED),
        (CallState.TRANSFERRING, Trigger.BOT_HUNG_UP),
        (CallState.BOT_DIALLING, Trigger.REFER_RECEIVED),
    ],
)
def test_invalid_transitions(current: CallState, trigger: Trigger) -> None:
    with pytest.raises(InvalidTransition):
        next_state(current, trigger)


@pytest.mark.parametrize("state", sorted(IN_PROGRESS))
def test_every_live_state_can_fail_safe_or_be_abandoned(state: CallState) -> None:
    """An unexpected fault moves a live call to ERROR, which sends the caller to a queue."""
    assert next_state(state, Trigger.FAULT) is CallState.ERROR
    assert next_state(state, Trigger.CALLER_HUNG_UP) is CallState.ABANDONED


@pytest.mark.parametrize(
    ("previous", "new", "outcome", "bot_part"),
    [
        (CallState.BOT_CONNECTED, CallState.RESOLVED, Outcome.RESOLVED, "charged"),
        (CallState.BOT_CONNECTED, CallState.TRANSFERRING, None, "charged"),
        (CallState.TRANSFERRING, CallState.QUEUED, Outcome.ESCALATED, None),
        (CallState.BOT_FAILED, CallState.QUEUED, None, None),
        (CallState.BOT_DIALLING, CallState.BOT_FAILED, Outcome.BOT_FAILED, "free"),
        (CallState.STARTED, CallState.BOT_DIALLING, None, None),
        (CallState.BOT_DIALLING, CallState.ABANDONED, Outcome.ABANDONED, "free"),
        (CallState.BOT_CONNECTED, CallState.ERROR, Outcome.ERROR, "charged"),
    ],
)
def test_entry_and_exit_actions(
    previous: CallState, new: CallState, outcome: Outcome | None, bot_part: str | None
) -> None:
    assert entry_outcome(previous, new) == outcome
    assert bot_part_ends(previous, new) == bot_part
