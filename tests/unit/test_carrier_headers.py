"""Headers that travel, the pure parts: value checks, verstat, the dialplan's arguments
(made by the renderer, read back by the app), the settings' rules and the bot's INVITE."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from ari_app.asterisk import agent_header_steps, carrier_header_args
from ari_app.calls.bot_leg import bot_leg_variables
from ari_app.calls.carrier import (
    HEADER_NOT_BASE64,
    CallerFacts,
    CarrierHeaders,
    copy_bot_headers,
    read_carrier_headers,
    split_inbound_args,
)
from ari_app.calls.transfer import TransferDecision, as_channel_variables, caller_variables
from ari_app.config import ConfigError, load_config
from ari_app.config.headers import DIALPLAN_ARGS_BUDGET, header_arg_bytes
from ari_app.records import Record
from ari_app.reporting.aggregation import summarize
from ari_app.reporting.rendering import group_dict
from ari_app.sip import uui
from ari_app.sip.headers import (
    HEADER_CONTROL_CHARS,
    HEADER_CRLF,
    HEADER_NOT_ASCII,
    HEADER_TOO_LARGE,
    HeaderRefused,
    clean_header_value,
    verstat_of,
)

PROFILE = {
    "bot_endpoint": "voicebot",
    "answer_timeout_seconds": 5,
    "fallback_queue": "agents-queue",
    "default_queue": "agents-queue",
    "availability_queue": "agents-queue",
}


def config(**profile: Any) -> Any:
    return load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x"},
        overrides={"profiles": {"copying": {**PROFILE, **profile}}},
    )


def arg(value: bytes) -> str:
    """A header's argument value as the dialplan makes it."""
    return base64.b64encode(b":" + value).decode()


# -- values -------------------------------------------------------------------------------


def test_a_clean_value_is_copied_as_it_came() -> None:
    value = b'"Ann" <sip:+1555@a.example>;reason=unconditional;counter=1,\t<tel:+1666>'
    assert clean_header_value(value, 256) == value.decode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * 257, HEADER_TOO_LARGE),
        (b"abc\r\nVia: SIP/2.0/UDP evil", HEADER_CRLF),
        (b"abc\nX-Injected: 1", HEADER_CRLF),
        (b"abc\r", HEADER_CRLF),
        (b"caf\xc3\xa9", HEADER_NOT_ASCII),
        (b"\xff", HEADER_NOT_ASCII),
        (b"a\x00b", HEADER_CONTROL_CHARS),
        (b"a\x1bb", HEADER_CONTROL_CHARS),
        (b"a\x7fb", HEADER_CONTROL_CHARS),
    ],
)
def test_unsafe_values_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(HeaderRefused) as refused:
        clean_header_value(raw, 256)
    assert refused.value.reason == reason
    assert raw.decode("latin-1") not in str(refused.value)  # the message never echoes it


def test_the_size_limit_is_inclusive() -> None:
    assert clean_header_value(b"x" * 16, 16) == "x" * 16


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        (
            "<sip:+12155551212;verstat=TN-Validation-Passed@c.example;user=phone>",
            "TN-Validation-Passed",
        ),
        ("<tel:+12155551212;verstat=TN-Validation-Failed>", "TN-Validation-Failed"),
        ('"A" <sip:+1215;verstat=No-TN-Validation@c.example>;tag=1', "No-TN-Validation"),
        ("<sip:+1215;VERSTAT=tn-validation-passed-a@c.example>", "TN-Validation-Passed-A"),
        ("<sip:+1215;verstat=Trust-Me@c.example>", "unrecognised"),
        ("<sip:+1215;verstat=@c.example>", "unrecognised"),
        ("<sip:+1215@c.example>;tag=abc", None),
        ("<sip:+1215;xverstat=TN-Validation-Passed@c.example>", None),
        ("", None),
        (None, None),
    ],
)
def test_verstat_of(value: str | None, verdict: str | None) -> None:
    assert verstat_of(value) == verdict


# -- the dialplan's arguments -------------------------------------------------------------


def test_inbound_args_split_into_business_hours_and_headers() -> None:
    plain, headers, queues = split_inbound_args(
        ["busy,ish", "hdr.Diversion=OmE=", "queue.agents-queue=1:1:12", "hdr.From=Og=="]
    )
    assert plain == ["busy,ish"] and headers == {"Diversion": "OmE=", "From": "Og=="}
    assert queues == {"agents-queue": "1:1:12"}
    assert split_inbound_args([]) == ([], {}, {})


def test_carrier_headers_are_decoded_checked_and_kept_by_name() -> None:
    carrier = read_carrier_headers(
        {
            "Diversion": arg(b"<sip:1@a>"),
            "X-Absent": arg(b""),
            "X-Big": arg(b"y" * 65),
            "X-Bad": "***",
            "P-Asserted-Identity": arg(b"<tel:+1;verstat=TN-Validation-Failed>"),
            "From": arg(b"<sip:+1;verstat=TN-Validation-Passed@a>;tag=1"),
        },
        64,
    )
    assert carrier.allowed(["diversion", "X-Absent", "X-Big"]) == {"diversion": "<sip:1@a>"}
    assert set(carrier.refused) == {("X-Big", HEADER_TOO_LARGE), ("X-Bad", HEADER_NOT_BASE64)}
    assert carrier.verstat == "TN-Validation-Failed"  # P-Asserted-Identity before From


def test_verstat_falls_back_to_from_then_absent() -> None:
    from_only = {"From": arg(b"<sip:+1;verstat=TN-Validation-Passed@a>;tag=1")}
    assert read_carrier_headers(from_only, 256).verstat == "TN-Validation-Passed"
    # a refused P-Asserted-Identity is not read for its verstat
    refused_pai = {"P-Asserted-Identity": arg(b"<tel:+1;verstat=TN-Validation-Failed>\x01")}
    assert read_carrier_headers({**refused_pai, **from_only}, 256).verstat == "TN-Validation-Passed"
    assert read_carrier_headers({"From": arg(b"<sip:+1@a>")}, 256).verstat == "absent"
    assert read_carrier_headers({}, 256).verstat == "absent"


def test_the_renderer_reads_the_verstat_headers_and_every_listed_header_once() -> None:
    cfg = config(carrier_headers=["Diversion", "p-asserted-identity"])
    rendered = carrier_header_args(cfg)
    names = re.findall(r",hdr\.([^=]+)=", rendered)
    assert names == ["P-Asserted-Identity", "From", "Diversion"]
    assert ",hdr.Diversion=${BASE64_ENCODE(:${PJSIP_HEADER(read,Diversion):0:257})}" in rendered
    # what the renderer's arguments carry, the app reads back (an argument per header)
    _, headers, _ = split_inbound_args([f"hdr.Diversion={arg(b'<sip:1@a>')}"])
    assert read_carrier_headers(headers, 256).values == {"diversion": "<sip:1@a>"}


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "detail"),
    [
        ({"carrier_headers": ["Via"]}, "sets itself"),
        ({"carrier_headers": ["user-to-user"]}, "sets itself"),
        ({"carrier_headers": ["X-Interaction-Id"]}, "sets itself"),
        ({"carrier_headers": ["X-Verstat"], "verstat_header": "X-Verstat"}, "sets itself"),
        ({"carrier_headers": ["X-A", "x-a"]}, "listed twice"),
        ({"carrier_headers": ["X A"]}, "SIP header name"),
        ({"context_keys": ["dialled", "dialled"]}, "context_keys"),
        ({"context_keys": ["queue"]}, "context_keys"),
        ({"verstat_header": "Contact"}, "sets itself"),
        ({"max_bot_seconds": -1}, "max_bot_seconds"),
    ],
)
def test_header_settings_are_checked_at_load(profile: dict[str, Any], detail: str) -> None:
    with pytest.raises(ConfigError, match=r"profiles\.copying") as error:
        config(**profile)
    assert detail in str(error.value)


def test_the_dialplan_arguments_must_fit_asterisks_buffer() -> None:
    per_header = header_arg_bytes("X-Header-00", 1024)
    too_many = [f"X-Header-{n:02d}" for n in range(DIALPLAN_ARGS_BUDGET // per_header + 1)]
    with pytest.raises(ConfigError, match="exceed"):
        load_config(
            env={"BOTBRIDGE_ARI_PASSWORD": "x"},
            overrides={
                "bridge": {"max_header_bytes": 1024},
                "profiles": {"copying": {**PROFILE, "carrier_headers": too_many}},
            },
        )
    # the same list fits at the default size
    assert config(carrier_headers=too_many).profiles["copying"].carrier_headers


# -- the bot's INVITE ------------------------------------------------------------------------

CARRIER = CarrierHeaders({"diversion": "<sip:1@a>", "x-other": "o"}, verstat="TN-Validation-Passed")
FACTS = CallerFacts(number="15550001111", dialled="5551000", carrier=CARRIER)


def headers_of(variables: dict[str, str]) -> dict[str, str]:
    prefix = "PJSIP_HEADER(add,"
    return {k[len(prefix) : -1]: v for k, v in variables.items() if k.startswith(prefix)}


def test_by_default_the_bot_invite_is_the_seeds() -> None:
    profile = load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x"}).profiles["default"]
    headers = headers_of(bot_leg_variables(profile, "iid", FACTS, "available"))
    assert set(headers) == {"User-to-User", "X-Interaction-Id"}
    payload = uui.decode_uui_context(uui.parse_uui(headers["User-to-User"]))
    assert payload.pairs == (("business_hours", "available"),)


def test_a_profile_adds_its_headers_and_context_keys_in_order() -> None:
    profile = config(
        carrier_headers=["Diversion", "X-Missing"],
        context_keys=["verstat", "caller", "dialled"],
        verstat_header="X-Verstat",
    ).profiles["copying"]
    headers = headers_of(bot_leg_variables(profile, "iid", FACTS, "busy"))
    assert headers["Diversion"] == "<sip:1@a>"
    assert "X-Missing" not in headers and "x-other" not in headers
    assert headers["X-Verstat"] == "TN-Validation-Passed"
    payload = uui.decode_uui_context(uui.parse_uui(headers["User-to-User"]))
    assert payload.pairs == (
        ("business_hours", "busy"),
        ("verstat", "TN-Validation-Passed"),
        ("caller", "15550001111"),
        ("dialled", "5551000"),
    )


# -- reports -----------------------------------------------------------------------------------


def test_reports_count_calls_by_verstat() -> None:
    records: list[Record] = [
        {"outcome": "resolved", "verstat": "TN-Validation-Passed"},
        {"outcome": "escalated", "verstat": "TN-Validation-Passed"},
        {"outcome": "resolved", "verstat": "TN-Validation-Failed"},
        {"outcome": "resolved", "verstat": "absent"},
        {"outcome": "bypassed", "verstat": None},  # never read: not counted
    ]
    row = summarize("(total)", records)
    assert row.verstat == {"TN-Validation-Passed": 2, "TN-Validation-Failed": 1, "absent": 1}
    assert group_dict(row)["verstat"] == {
        "TN-Validation-Passed": 2,
        "TN-Validation-Failed": 1,
        "absent": 1,
    }


# -- the bot's headers towards the agent -------------------------------------------------------


def test_bot_headers_are_copied_as_listed_checked_and_capped() -> None:
    sent = {
        "x-case-id": "case-1",
        "X-Summary": 'a, b; "c"',
        "X-Big": "b" * 17,
        "X-Crlf": "a\r\nVia: x",
        "X-Other": "not listed",
    }
    copied, refused = copy_bot_headers(sent, ["X-Case-Id", "X-Summary", "X-Big", "X-Crlf"], 16)
    assert copied == {"X-Case-Id": "case-1", "X-Summary": 'a, b; "c"'}
    assert refused == [("X-Big", HEADER_TOO_LARGE), ("X-Crlf", HEADER_CRLF)]


def test_bot_headers_travel_base64_in_inherited_caller_variables() -> None:
    cfg = config(bot_headers=["X-Case-Id"])
    decision = TransferDecision(queue="agents-queue", headers={"X-Case-Id": 'a,b"c'})
    variables = caller_variables("iid", cfg.profiles["copying"], decision, "escalated")
    assert base64.b64decode(variables["BOTBRIDGE_HDR_X_CASE_ID"]) == b'a,b"c'
    assert "__BOTBRIDGE_HDR_X_CASE_ID" in as_channel_variables(variables)
    steps = agent_header_steps(cfg)
    assert steps == (
        ' same => n,ExecIf($["${BOTBRIDGE_HDR_X_CASE_ID}" != ""]'
        "?Gosub(botbridge-agent-header,s,1(X-Case-Id,${BOTBRIDGE_HDR_X_CASE_ID})))"
    )


@pytest.mark.parametrize(
    ("names", "detail"),
    [(["X-Escalate-To"], "sets itself"), (["Contact"], "sets itself"), (["X-A", "x-a"], "twice")],
)
def test_bot_header_settings_are_checked_at_load(names: list[str], detail: str) -> None:
    with pytest.raises(ConfigError, match=detail):
        config(bot_headers=names)
