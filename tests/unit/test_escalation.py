"""Failed escalations: the queue's status, the profile's policy, the new bot dialog's context."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from ari_app.asterisk.hold_music import HOLD_TONE_FILE, write_hold_tone
from ari_app.calls.bot_leg import bot_leg_variables
from ari_app.calls.carrier import CallerFacts
from ari_app.calls.escalation import (
    Attempt,
    AttemptResult,
    FailureAction,
    attempt_closed,
    failed_escalation_context,
    failure_for_queue_status,
    next_action,
    returns_in,
)
from ari_app.config import ConfigError, load_config
from ari_app.records import Record, stored_escalations
from ari_app.sip import uui


def _profile(tmp_path: Path, toml: str = "") -> object:
    config_file = tmp_path / "c.toml"
    config_file.write_text("[profiles.default]\n" + toml)
    env = {"BOTBRIDGE_STATE_DIR": str(tmp_path), "BOTBRIDGE_CONFIG": str(config_file)}
    return load_config(env=env).profiles["default"]


def _attempt(via: str = "refer", queued_at: float = 100.0) -> Attempt:
    return Attempt(
        target="agents-queue",
        via=via,
        queued_at=queued_at,
        result=None,
        wait_seconds=None,
        agent_answered_at=None,
    )


@pytest.mark.parametrize(
    ("status", "result"),
    [
        ("TIMEOUT", AttemptResult.TIMEOUT),
        ("JOINEMPTY", AttemptResult.NO_AGENTS),
        ("LEAVEEMPTY", AttemptResult.NO_AGENTS),
        ("JOINUNAVAIL", AttemptResult.NO_AGENTS),
        ("LEAVEUNAVAIL", AttemptResult.NO_AGENTS),
        ("FULL", AttemptResult.FULL),
        ("UNKNOWN", AttemptResult.NO_AGENTS),  # no such queue
        ("CONTINUE", None),
        ("WITHDRAW", None),
        ("", None),
    ],
)
def test_queue_status_names_the_failure(status: str, result: AttemptResult | None) -> None:
    assert failure_for_queue_status(status) is result


def _returned_uui(profile: object, result: AttemptResult, queue: str) -> str:
    context = failed_escalation_context("available", result, queue)
    caller = CallerFacts(number="15550001111")
    variables = bot_leg_variables(profile, "iid", caller, "available", context)  # type: ignore[arg-type]
    return variables["PJSIP_HEADER(add,User-to-User)"]


def test_the_new_dialog_context_is_exactly_the_documented_one(tmp_path: Path) -> None:
    value = _returned_uui(_profile(tmp_path), AttemptResult.NO_AGENTS, "billing-queue")
    data, _, params = value.partition(";")
    assert params == "encoding=hex"
    assert bytes.fromhex(data) == (
        b"business_hours=available;escalation=failed;reason=no_agents;queue=billing-queue"
    )
    # the bot decodes it with the same codec as the first INVITE's
    context = uui.decode_uui_context(uui.parse_uui(value))
    assert context.as_dict()["reason"] == "no_agents"


def test_the_discriminator_is_kept_for_platforms_that_want_it(tmp_path: Path) -> None:
    profile = _profile(tmp_path, "uui_discriminator = true\n")
    value = _returned_uui(profile, AttemptResult.FULL, "q")
    assert value.startswith(f"{uui.UUI_PROTOCOL_DISCRIMINATOR:02x}")


def test_a_closed_attempt_has_its_wait_and_answer_time() -> None:
    answered = attempt_closed(_attempt(queued_at=100.0), AttemptResult.ANSWERED, 112.5)
    assert answered["result"] == "answered"
    assert answered["wait_seconds"] == 12.5
    assert answered["agent_answered_at"] == 112.5
    failed = attempt_closed(_attempt(queued_at=100.0), AttemptResult.TIMEOUT, 104.0)
    assert (failed["result"], failed["wait_seconds"], failed["agent_answered_at"]) == (
        "timeout",
        4.0,
        None,
    )


def test_return_to_bot_until_the_limit_then_overflow_then_the_end(tmp_path: Path) -> None:
    profile = _profile(tmp_path, "max_escalation_returns = 2\n")
    first = _attempt()
    assert next_action(profile, 0, first) is FailureAction.RETURN_TO_BOT  # type: ignore[arg-type]
    assert next_action(profile, 1, first) is FailureAction.RETURN_TO_BOT  # type: ignore[arg-type]
    assert next_action(profile, 2, first) is FailureAction.OVERFLOW  # type: ignore[arg-type]
    overflowed = _attempt(via="overflow")
    assert next_action(profile, 2, overflowed) is FailureAction.HANGUP  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["overflow", "hangup"])
def test_the_operator_policy_applies_from_the_first_failure(tmp_path: Path, policy: str) -> None:
    profile = _profile(tmp_path, f'on_escalation_failure = "{policy}"\n')
    assert next_action(profile, 0, _attempt()) is FailureAction(policy)  # type: ignore[arg-type]


def test_returns_are_read_from_the_attempts() -> None:
    timeout = attempt_closed(_attempt(), AttemptResult.TIMEOUT, 103.0)
    answered = attempt_closed(_attempt(), AttemptResult.ANSWERED, 103.0)
    overflow = _attempt(via="overflow")
    assert returns_in([]) == 0
    assert returns_in([timeout]) == 1  # failed, nothing after it yet: back with a bot
    assert returns_in([timeout, timeout, answered]) == 2
    assert returns_in([timeout, timeout, overflow]) == 1  # the second failure overflowed


def test_stored_attempts_are_read_back_and_junk_is_dropped() -> None:
    attempts = [_attempt(), attempt_closed(_attempt(via="overflow"), AttemptResult.FULL, 101.0)]
    record: Record = {"escalations": json.dumps(attempts)}
    assert stored_escalations(record) == attempts
    assert stored_escalations({"escalations": None}) == []
    assert stored_escalations({"escalations": "not json"}) == []
    assert stored_escalations({"escalations": json.dumps([{"target": "q"}, 3])}) == []


def test_defaults_and_overflow_queue(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    assert profile.on_escalation_failure == "return_to_bot"  # type: ignore[attr-defined]
    assert profile.max_escalation_returns == 2  # type: ignore[attr-defined]
    assert profile.overflow_queue == profile.fallback_queue  # type: ignore[attr-defined]
    named = _profile(tmp_path, 'overflow_target = "overflow-queue"\n[queues.overflow-queue]\n')
    assert named.overflow_queue == "overflow-queue"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "toml",
    [
        'on_escalation_failure = "voicemail"\n',
        "max_escalation_returns = -1\n",
        'overflow_target = "bad queue;"\n',
    ],
)
def test_bad_policy_settings_are_refused(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError, match="profiles"):
        _profile(tmp_path, toml)


def test_the_hold_tone_is_written_once_and_never_over_the_operators_files(tmp_path: Path) -> None:
    moh = tmp_path / "moh"
    write_hold_tone(moh)
    with wave.open(str(moh / HOLD_TONE_FILE)) as tone:
        assert (tone.getframerate(), tone.getsampwidth(), tone.getnchannels()) == (8000, 2, 1)
        frames = tone.readframes(tone.getnframes())
    assert any(frames)  # not silence
    own = tmp_path / "own"
    own.mkdir()
    (own / "music.wav").write_bytes(b"x")
    write_hold_tone(own)
    assert [p.name for p in own.iterdir()] == ["music.wav"]
