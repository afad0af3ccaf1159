"""Tests for ari_app.sip.refer_to: the one Refer-To parser."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ari_app import sip
from ari_app.calls.transfer import ATTENDED_TRANSFER_IGNORED, decide_transfer
from ari_app.config import load_config
from ari_app.sip import (
    ReferTo,
    ReferToError,
    ReferToMalformed,
    ReferToNotUtf8,
    parse_refer_to,
)
from ari_app.sip.refer_to import MAX_REFER_TO_CHARS
from ari_app.sip.uui import (
    ContextError,
    ContextMalformed,
    ContextNotUtf8,
    decode_context,
    parse_uui,
    safe_key,
    safe_value,
)

ESCALATE_HEX = "657363616c6174655f746f3d6167656e74732d7175657565"  # escalate_to=agents-queue
BILLING_HEX = b"escalate_to=billing".hex()
SEED_REFER_TO = f"<sip:escalation@host?User-to-User={ESCALATE_HEX}%3Bencoding%3Dhex>"
# The bug: an escaped control character in the user part used to throw the context away.
ESCAPED_CONTROL_USER = f"<sip:esc%01@127.0.0.1?User-to-User={BILLING_HEX}%3Bencoding%3Dhex>"

CONFIG = load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x"})
DEFAULT = CONFIG.profiles["default"]

# Characters that must never come out of safe_value (see tests/unit/test_uui.py).
FORBIDDEN = set("${}[],|\"'\\;()\n\r&^%`=<>#*!~?")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

PROPERTY = settings(deadline=timedelta(milliseconds=500), max_examples=300)


# --------------------------------------------------------------------------------------------
# The whole value
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            SEED_REFER_TO,
            ReferTo(
                uri="sip:escalation@host",
                scheme="sip",
                user="escalation",
                host="host",
                headers=(("User-to-User", f"{ESCALATE_HEX};encoding=hex"),),
            ),
            id="seed",
        ),
        pytest.param(
            ESCAPED_CONTROL_USER,
            ReferTo(
                uri="sip:esc%01@127.0.0.1",
                scheme="sip",
                user="esc\x01",
                host="127.0.0.1",
                headers=(("User-to-User", f"{BILLING_HEX};encoding=hex"),),
            ),
            id="escaped-control-char-in-user",
        ),
        pytest.param(
            "<sip:e@h>",
            ReferTo(uri="sip:e@h", scheme="sip", user="e", host="h"),
            id="no-headers",
        ),
        pytest.param(
            "sip:e@h",
            ReferTo(uri="sip:e@h", scheme="sip", user="e", host="h"),
            id="bare",
        ),
        pytest.param(
            "  \t<sip:e@h>\t ",
            ReferTo(uri="sip:e@h", scheme="sip", user="e", host="h"),
            id="surrounding-whitespace",
        ),
        pytest.param(
            "<sip:e@h?>",
            ReferTo(uri="sip:e@h", scheme="sip", user="e", host="h"),
            id="empty-header-section",
        ),
        pytest.param(
            '"Escalation <desk>" <SIPS:Agent.Desk:pw@[2001:db8::1]:5061;transport=tls;lr'
            "?X-A=1&X-B=&X-C>;method=INVITE;x",
            ReferTo(
                uri="SIPS:Agent.Desk:pw@[2001:db8::1]:5061;transport=tls;lr",
                scheme="sips",
                display_name="Escalation <desk>",
                user="Agent.Desk",
                host="[2001:db8::1]",
                port=5061,
                uri_params=(("transport", "tls"), ("lr", "")),
                headers=(("X-A", "1"), ("X-B", ""), ("X-C", "")),
                params=(("method", "INVITE"), ("x", "")),
            ),
            id="everything",
        ),
        pytest.param(
            "<tel:+1-555-1234;phone-context=example.com?X-A=1>",
            ReferTo(
                uri="tel:+1-555-1234;phone-context=example.com",
                scheme="tel",
                user="+1-555-1234",
                uri_params=(("phone-context", "example.com"),),
                headers=(("X-A", "1"),),
            ),
            id="tel",
        ),
        pytest.param(
            "sip:h:5060;transport=tcp",
            ReferTo(
                uri="sip:h:5060;transport=tcp",
                scheme="sip",
                host="h",
                port=5060,
                uri_params=(("transport", "tcp"),),
            ),
            id="no-user-with-port-and-params",
        ),
        pytest.param(
            "<sip:e@h;x%3By=a%20b>",
            ReferTo(
                uri="sip:e@h;x%3By=a%20b",
                scheme="sip",
                user="e",
                host="h",
                uri_params=(("x;y", "a b"),),
            ),
            id="escaped-uri-param",
        ),
        pytest.param(
            '<sip:e@h>;a="x;\\"y\\"";b=tok',
            ReferTo(
                uri="sip:e@h",
                scheme="sip",
                user="e",
                host="h",
                params=(("a", 'x;"y"'), ("b", "tok")),
            ),
            id="quoted-header-param",
        ),
        pytest.param(
            "<sip:e@h>;;a=1;",
            ReferTo(uri="sip:e@h", scheme="sip", user="e", host="h", params=(("a", "1"),)),
            id="empty-header-params-skipped",
        ),
        pytest.param(
            "<sip:e@h?&A=1&&B=2&>",
            ReferTo(
                uri="sip:e@h",
                scheme="sip",
                user="e",
                host="h",
                headers=(("A", "1"), ("B", "2")),
            ),
            id="empty-header-fields-skipped",
        ),
        pytest.param(
            "<sip:e@h?A=1&a=2&A=3>",
            ReferTo(
                uri="sip:e@h",
                scheme="sip",
                user="e",
                host="h",
                headers=(("A", "1"), ("a", "2"), ("A", "3")),
            ),
            id="duplicates-kept-in-order",
        ),
        pytest.param(
            "<sip:e@h?A=x%3Fy%26z%3Dw%25&B=a=b>",
            ReferTo(
                uri="sip:e@h",
                scheme="sip",
                user="e",
                host="h",
                headers=(("A", "x?y&z=w%"), ("B", "a=b")),
            ),
            id="escaped-question-mark-ampersand-equals-percent",
        ),
    ],
)
def test_parse_refer_to(text: str, expected: ReferTo) -> None:
    assert parse_refer_to(text) == expected


def test_the_package_exports_the_parser() -> None:
    assert sip.parse_refer_to is parse_refer_to
    assert sip.USER_TO_USER_HEADERS == ("User-to-User", "x-User-to-User")
    assert set(sip.__all__) == {
        "SCHEMES",
        "USER_TO_USER_HEADERS",
        "ReferTo",
        "ReferToError",
        "ReferToMalformed",
        "ReferToNotUtf8",
        "parse_refer_to",
    }


def test_refer_to_is_frozen() -> None:
    refer = parse_refer_to("<sip:e@h>")
    with pytest.raises(AttributeError):
        refer.user = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# The bug: an escaped control character in the user part spoilt a valid context
# --------------------------------------------------------------------------------------------


def test_control_character_in_the_user_does_not_spoil_the_context() -> None:
    refer = parse_refer_to(ESCAPED_CONTROL_USER)
    assert refer.user == "esc\x01"
    value = refer.user_to_user
    assert value == f"{BILLING_HEX};encoding=hex"
    context = decode_context(parse_uui(value).data)
    assert context.pairs == (("escalate_to", "billing"),)


def test_control_character_in_the_user_still_routes_by_the_context() -> None:
    decision = decide_transfer(CONFIG, DEFAULT, ESCAPED_CONTROL_USER, {})
    assert decision.error is None
    assert decision.escalate_to == "billing"
    assert decision.queue == "billing-queue"
    assert decision.context is not None
    assert decision.context.pairs == (("escalate_to", "billing"),)
    assert decision.refer_user == "esc\x01"


# --------------------------------------------------------------------------------------------
# Display name
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display_name"),
    [
        pytest.param("<sip:e@h>", None, id="none"),
        pytest.param("sip:e@h", None, id="bare-uri"),
        pytest.param('"" <sip:e@h>', "", id="empty-quoted"),
        pytest.param('"Desk" <sip:e@h>', "Desk", id="quoted"),
        pytest.param('"Desk"<sip:e@h>', "Desk", id="quoted-no-space"),
        pytest.param('"a \\" <b>" <sip:e@h>', 'a " <b>', id="escaped-quote-and-brackets"),
        pytest.param('"back\\\\slash" <sip:e@h>', "back\\slash", id="escaped-backslash"),
        pytest.param('"a;b?c=d" <sip:e@h>', "a;b?c=d", id="separators-inside-quotes"),
        pytest.param("Desk <sip:e@h>", "Desk", id="token"),
        pytest.param("Help  Desk\t<sip:e@h>", "Help  Desk", id="tokens"),
        pytest.param('"Caf\u00e9" <sip:e@h>', "Caf\u00e9", id="utf8"),
    ],
)
def test_display_name(text: str, display_name: str | None) -> None:
    assert parse_refer_to(text).display_name == display_name


# --------------------------------------------------------------------------------------------
# User part
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "user"),
    [
        pytest.param(SEED_REFER_TO, "escalation", id="seed"),
        pytest.param("sip:escalation@host", "escalation", id="bare"),
        pytest.param("<SIP:Esc@h>", "Esc", id="scheme-case"),
        pytest.param("sips:Agent.Desk@h:5061;transport=tls", "Agent.Desk", id="sips"),
        pytest.param('"Desk" <sip:desk%20one@h>', "desk one", id="escaped-space"),
        pytest.param("<sip:a%40b@h>", "a@b", id="escaped-at"),
        pytest.param("<sip:a%3Fb@h?X=1>", "a?b", id="escaped-question-mark"),
        pytest.param("<sip:user:secret@h>", "user", id="password-dropped"),
        pytest.param("<sip:alice;day=tuesday@h>", "alice;day=tuesday", id="user-params"),
        pytest.param("<sip:a+b@h>", "a+b", id="plus-is-literal"),
        pytest.param("<sip:esc%01@h>", "esc\x01", id="escaped-control"),
        pytest.param("<sip:a%0a@h>", "a\n", id="escaped-newline"),
        pytest.param("<sip:%C3%A9@h>", "\u00e9", id="utf8"),
        pytest.param("<tel:+15551234;phone-context=example.com>", "+15551234", id="tel"),
        pytest.param("<tel:%2B1555?X=1>", "+1555", id="tel-escaped"),
        pytest.param("<sip:h>", None, id="no-user"),
        pytest.param("<sip:@h>", None, id="empty-user"),
        pytest.param("<sip::pw@h>", None, id="password-only"),
        pytest.param("<sip:h?X-Foo=a@b>", None, id="at-in-headers"),
    ],
)
def test_user(text: str, user: str | None) -> None:
    assert parse_refer_to(text).user == user


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        pytest.param("<sip:e@h>", "h", None, id="name"),
        pytest.param("<sip:e@Host.Example.COM:5070>", "Host.Example.COM", 5070, id="port"),
        pytest.param("<sip:e@127.0.0.1:0>", "127.0.0.1", 0, id="port-zero"),
        pytest.param("<sip:e@h:65535>", "h", 65535, id="port-max"),
        pytest.param("<sip:e@[::1]>", "[::1]", None, id="ipv6"),
        pytest.param("<sip:e@[::1]:5060;transport=tcp>", "[::1]", 5060, id="ipv6-port"),
        pytest.param("<tel:+1555>", None, None, id="tel-has-no-host"),
    ],
)
def test_host_and_port(text: str, host: str | None, port: int | None) -> None:
    refer = parse_refer_to(text)
    assert (refer.host, refer.port) == (host, port)


# --------------------------------------------------------------------------------------------
# URI headers: User-to-User, Replaces, header()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(SEED_REFER_TO, f"{ESCALATE_HEX};encoding=hex", id="seed"),
        pytest.param(
            "sip:escalation@host?User-to-User=6162%3Bencoding%3Dhex",
            "6162;encoding=hex",
            id="no-brackets",
        ),
        pytest.param(
            '"Escalation <desk>" <sip:e@h?User-to-User=6162>;method=INVITE',
            "6162",
            id="quoted-display-name-and-params",
        ),
        pytest.param(
            '"a \\" <b>" <sip:e@h?User-to-User=6162>', "6162", id="display-name-escaped-quote"
        ),
        pytest.param("Escalation <sip:e@h?user-to-user=6162>", "6162", id="token-display-name"),
        pytest.param(
            "<sip:e@h?X-User-to-User=6162%3Bencoding%3Dhex>", "6162;encoding=hex", id="x-alias"
        ),
        pytest.param("<sip:e@h?x-user-to-user=6162>", "6162", id="x-alias-lower"),
        pytest.param(
            "<sip:e@h?X-Foo=bar&User-to-User=6162%3Bencoding%3Dhex&X-Bar=baz>",
            "6162;encoding=hex",
            id="ampersand-joined",
        ),
        pytest.param(
            "<sip:e@h?x-user-to-user=aaaa&User-to-User=6162>", "6162", id="standard-beats-alias"
        ),
        pytest.param(
            "<sip:e@h?User-to-User=6162&User-to-User=6364>", "6162", id="first-occurrence"
        ),
        pytest.param("<sip:e@h?User%2Dto%2DUser=6162>", "6162", id="escaped-name"),
        pytest.param("<sip:e@h? User-to-User =6162>", "6162", id="whitespace-around-name"),
        pytest.param("<sip:e@h;transport=tcp?USER-TO-USER=6162>", "6162", id="uri-params"),
        pytest.param(
            "<sip:e@h?User-to-User=6162>;x=y?User-to-User=6364", "6162", id="after-bracket-ignored"
        ),
        pytest.param(
            "<sip:e@h?User-to-User=escalate_to%3Dagents-queue>",
            "escalate_to=agents-queue",
            id="plain-text",
        ),
        pytest.param(
            "<sip:e@h?User-to-User=escalate_to%3Dbilling%26order%3DA-1234>",
            "escalate_to=billing&order=A-1234",
            id="escaped-ampersand-in-value",
        ),
        pytest.param("<sip:e@h?User-to-User=a%3Fb>", "a?b", id="escaped-question-mark-in-value"),
        pytest.param("<sip:e@h?User-to-User=>", "", id="empty-value"),
        pytest.param("<sip:e@h?User-to-User>", "", id="no-equals"),
        pytest.param("<sip:e@h?User-to-User=a+b>", "a+b", id="plus-is-literal"),
        pytest.param("<sip:e@h?User-to-User=%01>", "\x01", id="control-is-for-parse-uui"),
        pytest.param("<sip:e@h>", None, id="no-headers"),
        pytest.param("<sip:e@h?X-Foo=bar>", None, id="other-headers"),
        pytest.param("<sip:e@h?User-to-Users=1&XUser-to-User=2>", None, id="near-misses"),
    ],
)
def test_user_to_user(text: str, expected: str | None) -> None:
    assert parse_refer_to(text).user_to_user == expected


@pytest.mark.parametrize(
    ("text", "replaces"),
    [
        pytest.param(
            "<sip:a@h?Replaces=x%40y%3Bto-tag%3D1%3Bfrom-tag%3D2>",
            "x@y;to-tag=1;from-tag=2",
            id="escaped-at-and-semicolons",
        ),
        pytest.param("<sip:a@h?User-to-User=00&replaces=x>", "x", id="lower-case"),
        pytest.param("<sip:a@h?REPLACES=x%40y>", "x@y", id="upper-case"),
        pytest.param("<sip:a@h?Re%70laces=x>", "x", id="escaped-name"),
        pytest.param("<sip:a@h?Replaces=>", "", id="empty-value"),
        pytest.param("<sip:a@h?Replaces>", "", id="no-equals"),
        pytest.param(
            '"Agent" <sip:a@h?Replaces=a%40b&Replaces=c>;x=1', "a@b", id="first-occurrence"
        ),
        pytest.param("<sip:a@h?User-to-User=7265706c61636573>", None, id="only-in-a-value"),
        pytest.param("<sip:a@h?X-Replaces=x>", None, id="other-name"),
        pytest.param("<sip:replaces@h;replaces=x>", None, id="user-and-uri-param-are-not"),
        pytest.param("<sip:a@h>;Replaces=x", None, id="header-param-is-not"),
        pytest.param("<sip:a@h>", None, id="no-headers"),
    ],
)
def test_replaces_and_is_attended(text: str, replaces: str | None) -> None:
    refer = parse_refer_to(text)
    assert refer.replaces == replaces
    assert refer.is_attended is (replaces is not None)


def test_replaces_is_an_attended_transfer_handled_as_blind() -> None:
    text = (
        f"<sip:agent@h?Replaces=a%40b%3Bto-tag%3D1%3Bfrom-tag%3D2"
        f"&User-to-User={BILLING_HEX}%3Bencoding%3Dhex>"
    )
    decision = decide_transfer(CONFIG, DEFAULT, text, {})
    assert (decision.queue, decision.error) == ("billing-queue", ATTENDED_TRANSFER_IGNORED)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Foo", "1"),
        ("x-foo", "1"),
        ("X-FOO", "1"),
        ("X-Bar", ""),
        ("X-Baz", None),
        ("", None),
    ],
)
def test_header_is_case_insensitive(name: str, value: str | None) -> None:
    refer = parse_refer_to("<sip:e@h?X-Foo=1&x-foo=2&X-Bar=>")
    assert refer.header(name) == value


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("", ReferToMalformed, id="empty"),
        pytest.param(" \t", ReferToMalformed, id="blank"),
        pytest.param("garbage", ReferToMalformed, id="no-scheme"),
        pytest.param("escalation@host", ReferToMalformed, id="no-scheme-with-at"),
        pytest.param("<>", ReferToMalformed, id="empty-brackets"),
        pytest.param("<http://x@h>", ReferToMalformed, id="other-scheme"),
        pytest.param("<1sip:e@h>", ReferToMalformed, id="bad-scheme"),
        pytest.param("<sip:e@h", ReferToMalformed, id="unterminated-bracket"),
        pytest.param("<sip:e@h?User-to-User=6162", ReferToMalformed, id="unterminated-headers"),
        pytest.param('"unterminated <sip:e@h>', ReferToMalformed, id="unterminated-display"),
        pytest.param('"Name" sip:e@h', ReferToMalformed, id="display-without-uri"),
        pytest.param("Name sip:e@h", ReferToMalformed, id="token-display-without-uri"),
        pytest.param('a"b <sip:e@h>', ReferToMalformed, id="stray-quote-in-display"),
        pytest.param("<sip:<e>@h>", ReferToMalformed, id="bracket-in-uri"),
        pytest.param("sip:e@h>", ReferToMalformed, id="stray-closing-bracket"),
        pytest.param("<sip:e@h> junk", ReferToMalformed, id="junk-after-bracket"),
        pytest.param("<sip:e@h>;=x", ReferToMalformed, id="header-param-without-name"),
        pytest.param('<sip:e@h>;a="x', ReferToMalformed, id="unterminated-quoted-param"),
        pytest.param('<sip:e@h>;a="x"y', ReferToMalformed, id="text-after-quoted-param"),
        pytest.param("<sip:e@h>;a=x\"y'", ReferToMalformed, id="stray-quote-in-param"),
        pytest.param("<sip:>", ReferToMalformed, id="no-host"),
        pytest.param("<sip:e@>", ReferToMalformed, id="empty-host"),
        pytest.param("<sip:e@;transport=tcp>", ReferToMalformed, id="params-without-host"),
        pytest.param("<sip:e@ h>", ReferToMalformed, id="space-before-host"),
        pytest.param("<sip:e@[::1>", ReferToMalformed, id="unterminated-ipv6"),
        pytest.param("<sip:e@[]>", ReferToMalformed, id="empty-ipv6"),
        pytest.param("<sip:e@[::1]x>", ReferToMalformed, id="junk-after-ipv6"),
        pytest.param("<sip:e@h:>", ReferToMalformed, id="empty-port"),
        pytest.param("<sip:e@h:x>", ReferToMalformed, id="non-numeric-port"),
        pytest.param("<sip:e@h:65536>", ReferToMalformed, id="port-too-big"),
        pytest.param("<sip:e@h:123456>", ReferToMalformed, id="port-too-long"),
        pytest.param("<sip:e@h:\u0661\u0662>", ReferToMalformed, id="non-ascii-digits"),
        pytest.param("<sip:e@h;=x>", ReferToMalformed, id="uri-param-without-name"),
        pytest.param("<sip:e@h;a=%zz>", ReferToMalformed, id="bad-escape-in-uri-param"),
        pytest.param("<sip:e@h?=x>", ReferToMalformed, id="header-without-name"),
        pytest.param("<sip:e@h?%20=x>", ReferToMalformed, id="header-name-only-space"),
        pytest.param("<sip:a%zz@h>", ReferToMalformed, id="bad-escape-in-user"),
        pytest.param("<sip:a%2@h>", ReferToMalformed, id="short-escape-in-user"),
        pytest.param("<sip:e@h?User-to-User=61%2>", ReferToMalformed, id="short-escape"),
        pytest.param("<sip:e@h?User-to-User=%zz>", ReferToMalformed, id="non-hex-escape"),
        pytest.param("<sip:e@h?User-to-User=50%>", ReferToMalformed, id="bare-percent"),
        pytest.param("<sip:e@h?X%zz=1&User-to-User=6162>", ReferToMalformed, id="bad-name-escape"),
        pytest.param("<sip:e@h?X-Foo=50%>", ReferToMalformed, id="bad-escape-in-other-value"),
        pytest.param("<sip:%ff@h>", ReferToNotUtf8, id="user-not-utf8"),
        pytest.param("<sip:e@h?User-to-User=%FF>", ReferToNotUtf8, id="value-not-utf8"),
        pytest.param("<sip:e@h?%C3=1>", ReferToNotUtf8, id="name-not-utf8"),
        pytest.param("<sip:e@h;a=%FF>", ReferToNotUtf8, id="uri-param-not-utf8"),
        pytest.param("<sip:e@h?User-to-User=\ud800>", ReferToNotUtf8, id="surrogate"),
    ],
)
def test_rejects(text: str, error: type[ReferToError]) -> None:
    with pytest.raises(error) as raised:
        parse_refer_to(text)
    assert isinstance(raised.value, ReferToError)
    assert isinstance(raised.value, ContextError)


@pytest.mark.parametrize(
    ("error", "base", "reason"),
    [
        (ReferToMalformed, ContextMalformed, "context_malformed"),
        (ReferToNotUtf8, ContextNotUtf8, "context_not_utf8"),
    ],
)
def test_errors_reuse_the_uui_reason_codes(
    error: type[ReferToError], base: type[ContextError], reason: str
) -> None:
    exc = error("message")
    assert isinstance(exc, base)
    assert isinstance(exc, ReferToError)
    assert isinstance(exc, ValueError)
    assert exc.reason == reason
    assert exc.message == "message"


@pytest.mark.parametrize(
    "text",
    [
        "<sip:e@h?User-to-User=%zzSECRET>",
        "<sip:SECRET%FF@h>",
        '"SECRET <sip:e@h>',
        "<sip:e@SECRET:99999>",
        "<http://SECRET>",
    ],
)
def test_error_messages_do_not_echo_input(text: str) -> None:
    with pytest.raises(ReferToError) as raised:
        parse_refer_to(text)
    assert "SECRET" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("<sip:e@h?User-to-User=zz%3Bencoding%3Dhex>", "context_malformed", id="hex"),
        pytest.param("<sip:a%zz@h?User-to-User=6162>", "context_malformed", id="bad-uri"),
        pytest.param("<sip:e@h?User-to-User=%FF>", "context_not_utf8", id="not-utf8"),
        pytest.param("<sip:e@h?User-to-User=>", "context_missing", id="empty-uui"),
        pytest.param(
            "<sip:e@h?User-to-User=%01%3Bencoding%3Dhex>", "context_malformed", id="control-hex"
        ),
        pytest.param(
            "<sip:e@h?User-to-User=a%3D%01>", "context_control_chars", id="control-in-context"
        ),
    ],
)
def test_decide_transfer_reports_why(text: str, reason: str) -> None:
    decision = decide_transfer(CONFIG, DEFAULT, text, {})
    assert (decision.queue, decision.error) == ("agents-queue", reason)


# --------------------------------------------------------------------------------------------
# Hostile input is refused before any work
# --------------------------------------------------------------------------------------------

BIG = 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"' + "\\a" * BIG, id="unterminated-display"),
        pytest.param('"' + "\\" * BIG, id="backslashes"),
        pytest.param("<sip:e@h?" + "X=1&" * (BIG // 4) + ">", id="many-headers"),
        pytest.param("<sip:e@h?" + "&" * BIG + ">", id="many-empty-headers"),
        pytest.param("<sip:e@h;" + "a;" * (BIG // 2) + ">", id="many-uri-params"),
        pytest.param("<sip:e@h>" + ";a" * (BIG // 2), id="many-header-params"),
        pytest.param('<sip:e@h>;a="' + "\\a" * BIG, id="unterminated-quoted-param"),
        pytest.param("<sip:e@h?User-to-User=" + "%" * BIG, id="percents"),
        pytest.param("<sip:e@h?User-to-User=" + "%41" * BIG + ">", id="escapes"),
        pytest.param("<sip:" + "a" * BIG + "@h>", id="huge-user"),
        pytest.param("<" * BIG, id="open-brackets"),
        pytest.param("sip:" + "@" * BIG, id="ats"),
        pytest.param(" " * BIG, id="spaces"),
    ],
)
def test_hostile_input_is_refused_by_its_length(text: str) -> None:
    with pytest.raises(ReferToMalformed, match="longer than"):
        parse_refer_to(text)


@pytest.mark.parametrize(
    "text",
    [
        '"' + "\\a" * 4000,
        "<sip:e@h?" + "X=1&" * 2000 + ">",
        "<sip:e@h;" + "a;" * 4000 + ">",
        "<" * MAX_REFER_TO_CHARS,
    ],
)
def test_hostile_input_at_the_limit_is_parsed_or_refused(text: str) -> None:
    assert len(text) <= MAX_REFER_TO_CHARS
    try:
        parse_refer_to(text)
    except ContextError as exc:
        assert exc.reason == "context_malformed"


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

# Alphabet that hits the interesting branches far more often than uniform text does.
refer_text = st.text(
    alphabet=st.sampled_from(list('<>"\\@:?&=%;[]sipteluUSERTO-0123456789abcdefFzxX \t\x01')),
    max_size=80,
)
uri_like = st.builds(
    lambda display, user, headers, params: f"{display}<sip:{user}@h?{headers}>{params}",
    st.sampled_from(["", '"D" ', "D ", '"a\\"b" ']),
    st.text(alphabet=st.sampled_from(list("ab%01;:?=&")), max_size=12),
    st.text(alphabet=st.sampled_from(list("User-to-%3BDd=&0123456789abcdef")), max_size=40),
    st.text(alphabet=st.sampled_from(list(';a="\\ ')), max_size=10),
)


@PROPERTY
@given(st.one_of(st.text(), refer_text, uri_like))
def test_parse_refer_to_is_total(text: str) -> None:
    try:
        refer = parse_refer_to(text)
    except ReferToError as exc:
        assert exc.reason in {"context_malformed", "context_not_utf8"}
        return
    assert refer.scheme in sip.SCHEMES
    assert refer.user is None or refer.user
    assert (refer.host is None) is (refer.scheme == "tel")
    assert refer.port is None or 0 <= refer.port <= 65535
    assert "?" not in refer.uri
    assert all(name for name, _ in refer.headers)
    assert refer.is_attended is (refer.replaces is not None)
    for name in ("User-to-User", "x-User-to-User"):
        if refer.header(name) is not None:
            assert refer.user_to_user is not None
            break
    else:
        assert refer.user_to_user is None
    # the URI part alone, re-parsed, gives the same URI fields
    again = parse_refer_to(f"<{refer.uri}>")
    assert (again.scheme, again.user, again.host, again.port, again.uri_params) == (
        refer.scheme,
        refer.user,
        refer.host,
        refer.port,
        refer.uri_params,
    )


@PROPERTY
@given(st.one_of(st.text(), refer_text, uri_like))
def test_untrusted_refer_to_never_reaches_asterisk_unsanitised(text: str) -> None:
    try:
        refer = parse_refer_to(text)
        if refer.user is not None:
            assert not FORBIDDEN & set(safe_value(refer.user))
            assert not CONTROL_RE.search(safe_value(refer.user))
        if refer.user_to_user is None:
            return
        ctx = decode_context(parse_uui(refer.user_to_user).data)
    except ContextError:
        return
    for key, val in ctx.pairs:
        assert re.fullmatch(r"[A-Z0-9_]{1,32}", safe_key(key))
        assert not FORBIDDEN & set(safe_value(val))


@PROPERTY
@given(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
)
def test_any_user_and_value_survive_percent_encoding(user: str, value: str) -> None:
    def encode(text: str) -> str:
        return "".join(f"%{b:02X}" for b in text.encode("utf-8"))

    refer = parse_refer_to(f"<sip:{encode(user)}@h?User-to-User={encode(value)}&Replaces=x>")
    assert refer.user == (user or None)
    assert refer.user_to_user == value
    assert refer.is_attended
