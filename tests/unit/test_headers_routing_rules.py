"""More headers that travel, the pure parts: the default queue's live figures (rendered into
the dialplan's Stasis() arguments and queues.conf, read back by the app, put into the bot's
User-to-User), the profile a failed caller verification goes to, and the bot's headers kept
from its BYE's copy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ari_app import cli
from ari_app.asterisk import queue_figure_args, render, template_text, template_values
from ari_app.asterisk.human import queue_sections
from ari_app.calls.bot_leg import bot_leg_variables
from ari_app.calls.bye_context import ByeContexts
from ari_app.calls.carrier import CallerFacts, caller_facts, read_queue_figures
from ari_app.calls.routing import verstat_profile
from ari_app.config import ConfigError, load_config
from ari_app.config.headers import (
    DIALPLAN_ARGS_BUDGET,
    QUEUE_FIGURES_BYTES,
    VERSTAT_VERDICTS,
    check_carrier_headers,
    header_arg_bytes,
)
from ari_app.sip import uui
from ari_app.sip.headers import VERSTAT_ABSENT, VERSTAT_UNRECOGNISED, VERSTAT_VALUES, verstat_base
from tests.unit.test_bye_context_limits import ASTERISK, CALL_ID, bye, settings
from tests.unit.test_carrier_headers import PROFILE, headers_of
from tests.unit.test_hep import BYE_UUI, PASSWORD, SIP_PORT
from tests.unit.test_queues_config import DIRS

FIGURE_KEYS = ["agents_available", "estimated_wait"]


def config(**profiles: dict[str, Any]) -> Any:
    return load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x"},
        overrides={
            "queues": {"empty-queue": {}},
            "profiles": {name: {**PROFILE, **values} for name, values in profiles.items()},
        },
    )


# -- the default queue's figures -------------------------------------------------------------


def test_only_the_default_queues_of_profiles_that_ask_are_read_each_once() -> None:
    cfg = config(
        a={"context_keys": ["estimated_wait"]},
        b={"context_keys": FIGURE_KEYS},  # the same default_queue: read once
        c={"default_queue": "billing-queue", "context_keys": ["caller"]},  # asks for none
        d={"default_queue": "empty-queue", "context_keys": ["agents_available"]},
    )
    assert cfg.figures_queues == ("agents-queue", "empty-queue")
    rendered = queue_figure_args(cfg)
    assert re.findall(r",queue\.([^=]+)=", rendered) == ["agents-queue", "empty-queue"]
    assert (
        ",queue.agents-queue=${QUEUE_MEMBER(agents-queue,ready)}"
        ":${QUEUE_VARIABLES(agents-queue)}:${QUEUEHOLDTIME}"
    ) in rendered
    # QUEUE_VARIABLES sets nothing without setqueuevar: rendered for those queues only
    sections = {s.split("]")[0][1:]: s for s in queue_sections(cfg).split("\n\n")}
    assert "setqueuevar = yes" in sections["agents-queue"]
    assert "setqueuevar = yes" in sections["empty-queue"]
    assert "setqueuevar" not in sections["billing-queue"]


def test_the_figures_come_with_a_new_call_and_with_a_caller_back_from_its_queue() -> None:
    """Every Stasis() of the caller carries them: both inbound steps, the queue's and an
    external target's way back to the app (a returned caller's bot hears them as they are
    then)."""
    cfg = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x"},
        overrides={
            "profiles": {"default": {"context_keys": FIGURE_KEYS}},
            "external_targets": {"acme": {"address": "192.0.2.1:5060", "destination": "1"}},
        },
    )
    figures = queue_figure_args(cfg)
    extensions = render(template_text("extensions.conf"), template_values(cfg, DIRS, "/m"))
    stasis = [line for line in extensions.splitlines() if "Stasis(botbridge," in line]
    assert len(stasis) == 4, stasis  # two inbound, the queue's, the target's
    assert all(line.endswith(figures + ")") for line in stasis), stasis
    assert ",queue_ended,${QUEUESTATUS}" + figures + ")" in extensions


def test_no_profile_asking_reads_no_queue() -> None:
    cfg = config(a={"context_keys": ["dialled"]})
    assert cfg.figures_queues == () and queue_figure_args(cfg) == ""
    assert "setqueuevar" not in queue_sections(cfg)


def test_the_queue_figures_count_against_the_dialplan_arguments_budget() -> None:
    """The verstat headers and as many queues' figures as fit pass; one more does not."""
    room = DIALPLAN_ARGS_BUDGET - sum(
        header_arg_bytes(n, 256) for n in ("P-Asserted-Identity", "From")
    )
    names = [f"q{n:02d}-" + "q" * 60 for n in range(100)]
    per_queue = len(f",queue.{names[0]}=") + QUEUE_FIGURES_BYTES
    fitting = room // per_queue
    check_carrier_headers([], 256, names[:fitting])
    with pytest.raises(ValueError, match="queue figures"):
        check_carrier_headers([], 256, names[: fitting + 1])


@pytest.mark.parametrize(
    ("written", "figures"),
    [
        ("1:0:12", {"agents_available": "1", "estimated_wait": "12"}),
        ("0:0:0", {"agents_available": "0", "estimated_wait": "0"}),
        # QUEUE_VARIABLES did not set the variables: a QUEUEHOLDTIME there is not the queue's
        ("2:-1:7", {"agents_available": "2"}),
        ("", {}),
        ("x:0:${QUEUEHOLDTIME}", {}),
    ],
)
def test_queue_figures_are_read_back_as_whole_numbers(
    written: str, figures: dict[str, str]
) -> None:
    assert read_queue_figures({"agents-queue": written}) == {"agents-queue": figures}


def test_the_bot_is_told_its_default_queues_figures_after_business_hours() -> None:
    profile = config(
        a={"default_queue": "empty-queue", "context_keys": ["caller", *FIGURE_KEYS]}
    ).profiles["a"]
    facts = caller_facts(
        {}, {"caller_number": "15550001111"}, 256, {"empty-queue": "0:0:3", "agents-queue": "4:0:9"}
    )
    payload = uui.decode_uui_context(
        uui.parse_uui(headers_of(bot_leg_variables(profile, "iid", facts, "open"))["User-to-User"])
    )
    assert payload.pairs == (
        ("business_hours", "open"),
        ("caller", "15550001111"),
        ("agents_available", "0"),
        ("estimated_wait", "3"),
    )
    # a dialplan that passed no figures (rendered before the profile asked): keys left out
    bare = bot_leg_variables(profile, "iid", CallerFacts(number="1"), "open")
    assert uui.decode_uui_context(uui.parse_uui(headers_of(bare)["User-to-User"])).pairs == (
        ("business_hours", "open"),
        ("caller", "1"),
    )


# -- failed verification -------------------------------------------------------------------


def test_the_configurations_verdicts_are_the_readers() -> None:
    assert (*VERSTAT_VALUES, VERSTAT_ABSENT, VERSTAT_UNRECOGNISED) == VERSTAT_VERDICTS


@pytest.mark.parametrize(
    ("verdict", "base"),
    [
        ("TN-Validation-Failed-A", "TN-Validation-Failed"),
        ("TN-Validation-Passed-C", "TN-Validation-Passed"),
        ("TN-Validation-Failed", "TN-Validation-Failed"),
        ("No-TN-Validation", "No-TN-Validation"),
        ("absent", "absent"),
    ],
)
def test_verstat_base_drops_the_attestation(verdict: str, base: str) -> None:
    assert verstat_base(verdict) == base


@pytest.mark.parametrize(
    ("verstat", "handled_by"),
    [
        ("TN-Validation-Passed", "checked"),
        ("TN-Validation-Failed", "unverified"),
        ("TN-Validation-Failed-B", "unverified"),
        ("No-TN-Validation", "checked"),  # not in the default verstat_failed
        ("absent", "checked"),
    ],
)
def test_a_failed_verification_goes_to_the_named_profile(verstat: str, handled_by: str) -> None:
    cfg = config(checked={"on_verstat_failed": "unverified"}, unverified={})
    assert verstat_profile(cfg, cfg.profiles["checked"], verstat).name == handled_by


def test_verstat_failed_is_configurable_and_followed_one_hop() -> None:
    cfg = config(
        checked={
            "on_verstat_failed": "unverified",
            "verstat_failed": ["No-TN-Validation", "absent"],
        },
        unverified={"on_verstat_failed": "checked", "verstat_failed": ["absent"]},
    )
    checked = cfg.profiles["checked"]
    assert verstat_profile(cfg, checked, "absent").name == "unverified"  # not back again
    assert verstat_profile(cfg, checked, "TN-Validation-Failed") is checked
    # no on_verstat_failed: every call stays
    assert verstat_profile(cfg, cfg.profiles["default"], "TN-Validation-Failed").name == "default"


@pytest.mark.parametrize(
    ("profile", "detail"),
    [
        ({"on_verstat_failed": "nowhere"}, "unknown profile 'nowhere'"),
        ({"verstat_failed": ["TN-Validation-Maybe"]}, "verstat_failed"),
        ({"verstat_failed": ["absent", "absent"]}, "verstat_failed"),
    ],
)
def test_verstat_routing_settings_are_checked_at_load(profile: dict[str, Any], detail: str) -> None:
    with pytest.raises(ConfigError, match=detail):
        config(checked=profile)


def test_check_config_refuses_an_undefined_on_verstat_failed_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "botbridge.toml"
    path.write_text('[profiles.default]\non_verstat_failed = "nowhere"\n')
    monkeypatch.setenv("BOTBRIDGE_STATE_DIR", str(tmp_path))
    assert cli.main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "profiles.default.on_verstat_failed: names unknown profile 'nowhere'" in err


# -- the bot's headers on its BYE -------------------------------------------------------------


async def test_the_bye_copy_keeps_the_bot_headers_cut_one_over_the_limit() -> None:
    """The profiles' bot_headers are kept with the context header; a value longer than
    max_context_bytes is kept one character over it, so that copying it refuses it as too
    large (calls/carrier.py) while the BYE's context still counts."""
    receiver = ByeContexts(
        settings(), PASSWORD, (SIP_PORT,), 64, ("X-Case-Id", "X-Summary", "user-to-user")
    )
    receiver.follow(CALL_ID)
    extra = "\r\nX-Case-Id: c-1\r\nX-Summary: " + "s" * 500 + "\r\nX-Other: o"
    receiver.datagram_received(bye(uui=BYE_UUI + extra), ASTERISK)
    assert await receiver.headers_of(CALL_ID) == {
        "User-to-User": BYE_UUI,
        "X-Case-Id": "c-1",
        "X-Summary": "s" * 65,
    }
