"""Tests for ari_app.sip.uui: the User-to-User (RFC 7433) and bot-context codec."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ari_app.sip import parse_refer_to
from ari_app.sip.uui import (
    DEFAULT_MAX_CONTEXT_BYTES,
    MAX_SAFE_KEY_LEN,
    SAFE_VALUE_ALPHABET,
    UUI,
    UUI_PROTOCOL_DISCRIMINATOR,
    Context,
    ContextBadPair,
    ContextControlChars,
    ContextDuplicateKey,
    ContextEmptyKey,
    ContextError,
    ContextMalformed,
    ContextMissing,
    ContextNotUtf8,
    ContextTooLarge,
    decode_context,
    encode_context,
    format_uui,
    parse_uui,
    safe_key,
    safe_value,
)

SEED_HEX = "627573696e6573735f686f7572733d7072696f72697479"
SEED_TEXT = b"business_hours=priority"
SEED_INVITE_UUI = f"{SEED_HEX};encoding=hex"
SEED_REFER_TO = (
    "<sip:escalation@host?User-to-User="
    "657363616c6174655f746f3d6167656e74732d7175657565%3Bencoding%3Dhex>"
)
ESCALATE_HEX = "657363616c6174655f746f3d6167656e74732d7175657565"

# Characters that must never come out of safe_value: each is syntax somewhere in Asterisk
# (dialplan expressions, application arguments, Dial() targets) or in a SIP header.
FORBIDDEN = set("${}[],|\"'\\;()\n\r&^%`=<>#*!~?")

# Hypothesis: a hang or a quadratic blow-up fails the test instead of stalling the suite.
PROPERTY = settings(deadline=timedelta(milliseconds=500), max_examples=200)


# --------------------------------------------------------------------------------------------
# Seed examples
# --------------------------------------------------------------------------------------------


def test_seed_invite_uui_parses_to_business_hours() -> None:
    uui = parse_uui(SEED_INVITE_UUI)
    assert uui == UUI(data=SEED_TEXT, encoding="hex", params=())
    assert decode_context(uui.data).pairs == (("business_hours", "priority"),)


def test_seed_invite_uui_is_what_we_format() -> None:
    payload = encode_context({"business_hours": "priority"})
    assert payload == SEED_TEXT
    assert payload.hex() == SEED_HEX
    assert format_uui(payload) == SEED_INVITE_UUI


def test_seed_refer_to_yields_escalate_to() -> None:
    refer = parse_refer_to(SEED_REFER_TO)
    value = refer.user_to_user
    assert value == f"{ESCALATE_HEX};encoding=hex"
    assert value is not None
    ctx = decode_context(parse_uui(value).data)
    assert ctx.get("escalate_to") == "agents-queue"
    assert ctx.pairs == (("escalate_to", "agents-queue"),)
    assert refer.user == "escalation"


# --------------------------------------------------------------------------------------------
# Error classes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (ContextMissing, "context_missing"),
        (ContextTooLarge, "context_too_large"),
        (ContextMalformed, "context_malformed"),
        (ContextNotUtf8, "context_not_utf8"),
        (ContextControlChars, "context_control_chars"),
        (ContextDuplicateKey, "context_duplicate_key"),
        (ContextEmptyKey, "context_empty_key"),
        (ContextBadPair, "context_bad_pair"),
    ],
)
def test_error_reason_codes(cls: type[ContextError], reason: str) -> None:
    err = cls("human message")
    assert err.reason == reason
    assert cls.reason == reason
    assert isinstance(err, ContextError)
    assert isinstance(err, ValueError)
    assert str(err) == "human message"
    assert err.message == "human message"


def test_error_messages_do_not_echo_untrusted_input() -> None:
    secret = "zz\nInjected: yes"
    with pytest.raises(ContextError) as info:
        decode_context(f"a=1;{secret}".encode())
    assert "Injected" not in str(info.value)


# --------------------------------------------------------------------------------------------
# parse_uui
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        pytest.param(SEED_INVITE_UUI, {}, UUI(SEED_TEXT, "hex", ()), id="seed"),
        pytest.param(
            SEED_HEX.upper() + ";encoding=hex", {}, UUI(SEED_TEXT, "hex", ()), id="upper-hex"
        ),
        pytest.param(SEED_HEX + ";ENCODING=HEX", {}, UUI(SEED_TEXT, "hex", ()), id="upper-param"),
        pytest.param(SEED_HEX + ";Encoding=Hex", {}, UUI(SEED_TEXT, "hex", ()), id="mixed-param"),
        pytest.param(
            "6162;encoding=hex;purpose=isdn-uui;content=isdn-uui",
            {},
            UUI(b"ab", "hex", (("purpose", "isdn-uui"), ("content", "isdn-uui"))),
            id="purpose-content",
        ),
        pytest.param(
            "6162;content=x;PURPOSE=Foo;encoding=hex",
            {},
            UUI(b"ab", "hex", (("content", "x"), ("purpose", "Foo"))),
            id="param-order-kept-names-lowered",
        ),
        pytest.param(
            " 6162 ; encoding = hex ; purpose = x ",
            {},
            UUI(b"ab", "hex", (("purpose", "x"),)),
            id="whitespace",
        ),
        pytest.param(
            '6162;encoding=hex;note="a;b \\"c\\""',
            {},
            UUI(b"ab", "hex", (("note", 'a;b "c"'),)),
            id="quoted-param",
        ),
        pytest.param("6162;flag", {}, UUI(b"ab", None, (("flag", ""),)), id="bare-param"),
        pytest.param("\t6162\t;encoding=hex", {}, UUI(b"ab", "hex", ()), id="tab-lws"),
        # No encoding parameter: hex only when it decodes to printable UTF-8.
        pytest.param(SEED_HEX, {}, UUI(SEED_TEXT, None, ()), id="implicit-hex"),
        pytest.param(SEED_HEX.upper(), {}, UUI(SEED_TEXT, None, ()), id="implicit-upper-hex"),
        pytest.param("3132", {}, UUI(b"12", None, ()), id="implicit-hex-digits"),
        pytest.param("1234", {}, UUI(b"1234", None, ()), id="digits-decode-to-controls"),
        pytest.param("cafe", {}, UUI(b"cafe", None, ()), id="hexlike-word-not-utf8"),
        pytest.param("abc", {}, UUI(b"abc", None, ()), id="odd-length"),
        pytest.param(
            "escalate_to=agents-queue", {}, UUI(b"escalate_to=agents-queue", None, ()), id="plain"
        ),
        pytest.param(
            "escalate_to=q&note=x;purpose=p",
            {},
            UUI(b"escalate_to=q&note=x", None, (("purpose", "p"),)),
            id="plain-with-param",
        ),
        pytest.param('"a=1;b=2"', {}, UUI(b"a=1;b=2", None, ()), id="quoted-data"),
        pytest.param('"x \\\\ y"', {}, UUI(b"x \\ y", None, ()), id="quoted-data-escape"),
        pytest.param("zoë", {}, UUI("zoë".encode(), None, ()), id="plain-utf8"),
        pytest.param("a\x01b", {}, UUI(b"a\x01b", None, ()), id="plain-controls-left-to-context"),
        # Discriminator handling.
        pytest.param(
            "04" + SEED_HEX + ";encoding=hex",
            {"discriminator": True},
            UUI(SEED_TEXT, "hex", ()),
            id="discriminator-stripped",
        ),
        pytest.param(
            "00" + SEED_HEX + ";encoding=hex",
            {"discriminator": True},
            UUI(SEED_TEXT, "hex", ()),
            id="any-discriminator-octet",
        ),
        pytest.param(
            "04" + SEED_HEX + ";encoding=hex",
            {},
            UUI(b"\x04" + SEED_TEXT, "hex", ()),
            id="discriminator-kept-when-off",
        ),
        pytest.param(
            "04" + SEED_HEX, {"discriminator": True}, UUI(SEED_TEXT, None, ()), id="disc-implicit"
        ),
        pytest.param(
            "04;encoding=hex", {"discriminator": True}, UUI(b"", "hex", ()), id="only-disc"
        ),
        pytest.param("xabc", {"discriminator": True}, UUI(b"abc", None, ()), id="disc-plain"),
    ],
)
def test_parse_uui_accepts(value: str, kwargs: dict[str, bool], expected: UUI) -> None:
    assert parse_uui(value, **kwargs) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param("", ContextMissing, id="empty"),
        pytest.param("   ", ContextMissing, id="blank"),
        pytest.param(";encoding=hex", ContextMissing, id="no-data"),
        pytest.param('"";encoding=hex', ContextMissing, id="empty-quoted"),
        pytest.param("6g;encoding=hex", ContextMalformed, id="non-hex-char"),
        pytest.param("616;encoding=hex", ContextMalformed, id="odd-hex"),
        pytest.param("61 62;encoding=hex", ContextMalformed, id="space-in-hex"),
        pytest.param("٣٣;encoding=hex", ContextMalformed, id="non-ascii-digits"),
        pytest.param("6162;encoding=base64", ContextMalformed, id="unknown-encoding"),
        pytest.param("6162;encoding=", ContextMalformed, id="empty-encoding"),
        pytest.param("6162;encoding", ContextMalformed, id="bare-encoding"),
        pytest.param("6162;encoding=hex;encoding=hex", ContextMalformed, id="dup-encoding"),
        pytest.param("6162;purpose=a;Purpose=b", ContextMalformed, id="dup-param"),
        pytest.param("6162;", ContextMalformed, id="trailing-semicolon"),
        pytest.param("6162;;encoding=hex", ContextMalformed, id="empty-param"),
        pytest.param("6162;=x", ContextMalformed, id="param-no-name"),
        pytest.param("6162;pur pose=x", ContextMalformed, id="param-name-space"),
        pytest.param("6162;purpose=a b", ContextMalformed, id="param-value-space"),
        pytest.param("6162;purpose=a=b", ContextMalformed, id="param-value-equals"),
        pytest.param('6162;purpose="open', ContextMalformed, id="unterminated-quote"),
        pytest.param('6162;purpose="a\x01"', ContextMalformed, id="param-control"),
        pytest.param('6162;purpose="a\\', ContextMalformed, id="dangling-backslash"),
        pytest.param('6162;purpose=a"b"', ContextMalformed, id="param-stray-quote"),
        pytest.param('ab"c', ContextMalformed, id="stray-quote"),
        pytest.param('"a" "b"', ContextMalformed, id="two-quoted"),
        pytest.param("6162;encoding=hex, 6364;encoding=hex", ContextMalformed, id="two-values"),
        pytest.param("a,b", ContextMalformed, id="comma"),
        pytest.param("\ud800", ContextNotUtf8, id="lone-surrogate"),
        pytest.param("61" * 257 + ";encoding=hex", ContextTooLarge, id="hex-257"),
        pytest.param("a" * 257, ContextTooLarge, id="plain-257"),
        pytest.param("é" * 129, ContextTooLarge, id="plain-258-bytes-in-129-chars"),
        pytest.param("61;purpose=" + "x" * 2000, ContextTooLarge, id="huge-params"),
    ],
)
def test_parse_uui_rejects(value: str, error: type[ContextError]) -> None:
    with pytest.raises(error) as info:
        parse_uui(value)
    assert info.value.reason == error.reason


@pytest.mark.parametrize(
    ("size", "limit", "ok"),
    [
        (DEFAULT_MAX_CONTEXT_BYTES, DEFAULT_MAX_CONTEXT_BYTES, True),
        (DEFAULT_MAX_CONTEXT_BYTES + 1, DEFAULT_MAX_CONTEXT_BYTES, False),
        (16, 16, True),
        (17, 16, False),
        (1, 1, True),
        (2, 1, False),
    ],
)
@pytest.mark.parametrize("form", ["hex", "implicit-hex", "plain"])
def test_parse_uui_size_boundary(size: int, limit: int, ok: bool, form: str) -> None:
    data = b"a" * size
    value = {
        "hex": data.hex() + ";encoding=hex",
        "implicit-hex": data.hex(),
        "plain": data.decode(),
    }[form]
    if ok:
        assert parse_uui(value, max_bytes=limit).data == data
    else:
        with pytest.raises(ContextTooLarge):
            parse_uui(value, max_bytes=limit)


@pytest.mark.parametrize(("size", "ok"), [(256, True), (257, False)])
def test_parse_uui_limit_applies_after_discriminator_strip(size: int, ok: bool) -> None:
    value = format_uui(b"a" * size, discriminator=True)
    if ok:
        assert parse_uui(value, discriminator=True).data == b"a" * size
    else:
        with pytest.raises(ContextTooLarge):
            parse_uui(value, discriminator=True)
    # The same value without stripping is one byte longer.
    with pytest.raises(ContextTooLarge):
        parse_uui(value)


@pytest.mark.parametrize("limit", [0, -1])
def test_non_positive_limit_is_a_programming_error(limit: int) -> None:
    with pytest.raises(ValueError) as info:
        parse_uui("6162", max_bytes=limit)
    assert not isinstance(info.value, ContextError)
    with pytest.raises(ValueError):
        decode_context(b"a=1", max_bytes=limit)


# --------------------------------------------------------------------------------------------
# format_uui
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "params", "discriminator", "expected"),
    [
        pytest.param(SEED_TEXT, [], False, SEED_INVITE_UUI, id="seed"),
        pytest.param(b"\x00\xff\xab", [], False, "00ffab;encoding=hex", id="binary-lower-case"),
        pytest.param(
            b"ab",
            [("Purpose", "isdn-uui"), ("content", "isdn-uui")],
            False,
            "6162;encoding=hex;purpose=isdn-uui;content=isdn-uui",
            id="params",
        ),
        pytest.param(b"ab", [("note", "a b")], False, '6162;encoding=hex;note="a b"', id="quoted"),
        pytest.param(
            b"ab",
            [("note", 'say "hi" \\')],
            False,
            '6162;encoding=hex;note="say \\"hi\\" \\\\"',
            id="quoted-escapes",
        ),
        pytest.param(b"ab", [("flag", "")], False, "6162;encoding=hex;flag", id="bare"),
        pytest.param(b"ab", [], True, "046162;encoding=hex", id="discriminator"),
        pytest.param(b"", [], True, "04;encoding=hex", id="discriminator-only"),
    ],
)
def test_format_uui(
    data: bytes, params: list[tuple[str, str]], discriminator: bool, expected: str
) -> None:
    assert format_uui(data, params=params, discriminator=discriminator) == expected


def test_discriminator_octet_is_ia5() -> None:
    assert UUI_PROTOCOL_DISCRIMINATOR == 0x04


@pytest.mark.parametrize(
    ("data", "params", "error"),
    [
        pytest.param(b"", (), ContextMissing, id="empty"),
        pytest.param(b"ab", [("encoding", "hex")], ContextMalformed, id="explicit-encoding"),
        pytest.param(b"ab", [("bad name", "x")], ContextMalformed, id="bad-name"),
        pytest.param(b"ab", [("", "x")], ContextMalformed, id="empty-name"),
        pytest.param(b"ab", [("a", "1"), ("A", "2")], ContextMalformed, id="duplicate"),
        pytest.param(b"ab", [("a", "x\ny")], ContextMalformed, id="control-in-value"),
    ],
)
def test_format_uui_rejects(
    data: bytes, params: list[tuple[str, str]], error: type[ContextError]
) -> None:
    with pytest.raises(error):
        format_uui(data, params=params)


# --------------------------------------------------------------------------------------------
# decode_context / encode_context / Context
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pairs"),
    [
        pytest.param(SEED_TEXT, (("business_hours", "priority"),), id="seed"),
        pytest.param(b"escalate_to=agents-queue", (("escalate_to", "agents-queue"),), id="seed2"),
        pytest.param(b"a=1;b=2", (("a", "1"), ("b", "2")), id="semicolon"),
        pytest.param(b"a=1&b=2", (("a", "1"), ("b", "2")), id="ampersand"),
        pytest.param(b"a=1;b=2&c=3", (("a", "1"), ("b", "2"), ("c", "3")), id="mixed"),
        pytest.param(b"  a=1 ;  b = 2  ", (("a", "1"), ("b", "2")), id="whitespace"),
        pytest.param(b"a=1;", (("a", "1"),), id="trailing-separator"),
        pytest.param(b"a=1& ", (("a", "1"),), id="trailing-separator-space"),
        pytest.param(b"a=", (("a", ""),), id="empty-value"),
        pytest.param(b"a=x=y", (("a", "x=y"),), id="split-on-first-equals"),
        pytest.param(b"a=%3B%26%25%3D", (("a", ";&%="),), id="escapes"),
        pytest.param(b"a=%3b%2f", (("a", ";/"),), id="lower-case-escapes"),
        pytest.param(b"a=%20x%20", (("a", " x "),), id="escaped-edge-spaces"),
        pytest.param(b"a=hello world", (("a", "hello world"),), id="inner-space"),
        pytest.param(b"K.e-y_9=v", (("K.e-y_9", "v"),), id="key-alphabet"),
        pytest.param("name=Zoë 東京".encode(), (("name", "Zoë 東京"),), id="utf8"),
        pytest.param(b"a=%C3%A9", (("a", "é"),), id="escaped-utf8"),
        pytest.param(b"a=$[1+1],${X}|'\"\\()", (("a", "$[1+1],${X}|'\"\\()"),), id="raw-ok"),
    ],
)
def test_decode_context_accepts(data: bytes, pairs: tuple[tuple[str, str], ...]) -> None:
    assert decode_context(data).pairs == pairs


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"", ContextMissing, id="empty"),
        pytest.param(b"   ", ContextMissing, id="blank"),
        pytest.param(b";", ContextMissing, id="only-separator"),
        pytest.param(b" & ", ContextMissing, id="only-separator-spaced"),
        pytest.param(b"a", ContextBadPair, id="no-equals"),
        pytest.param(b"a=1;b", ContextBadPair, id="second-no-equals"),
        pytest.param(b"a=1;;b=2", ContextBadPair, id="empty-pair"),
        pytest.param(b";a=1", ContextBadPair, id="leading-separator"),
        pytest.param(b"a=1;;", ContextBadPair, id="two-trailing"),
        pytest.param(b"a b=1", ContextBadPair, id="space-in-key"),
        pytest.param(b"a$=1", ContextBadPair, id="dollar-in-key"),
        pytest.param(b"a%3B=1", ContextBadPair, id="escape-in-key"),
        pytest.param("é=1".encode(), ContextBadPair, id="non-ascii-key"),
        pytest.param(b"=1", ContextEmptyKey, id="empty-key"),
        pytest.param(b"a=1; =2", ContextEmptyKey, id="blank-key"),
        pytest.param(b"a=1;a=2", ContextDuplicateKey, id="duplicate"),
        pytest.param(b"a=1;A=2", ContextDuplicateKey, id="duplicate-case"),
        pytest.param(b"a.b=1;a_b=2", ContextDuplicateKey, id="duplicate-channel-var"),
        pytest.param(b"x" * 32 + b"a=1;" + b"x" * 32 + b"b=2", ContextDuplicateKey, id="trunc"),
        pytest.param(b"a=\x00", ContextControlChars, id="nul"),
        pytest.param(b"a=1\nb=2", ContextControlChars, id="newline"),
        pytest.param(b"a=1\r\n", ContextControlChars, id="crlf"),
        pytest.param(b"a=\t1", ContextControlChars, id="tab"),
        pytest.param(b"a=\x7f", ContextControlChars, id="del"),
        pytest.param("a=\u0085".encode(), ContextControlChars, id="c1-nel"),
        pytest.param("a=\u009b".encode(), ContextControlChars, id="c1-csi"),
        pytest.param(b"a=%00", ContextControlChars, id="escaped-nul"),
        pytest.param(b"a=%0A", ContextControlChars, id="escaped-newline"),
        pytest.param(b"a=%C2%85", ContextControlChars, id="escaped-c1"),
        pytest.param(b"a=\xff", ContextNotUtf8, id="bad-utf8"),
        pytest.param(b"a=\xc3", ContextNotUtf8, id="truncated-utf8"),
        pytest.param(b"a=\xed\xa0\x80", ContextNotUtf8, id="encoded-surrogate"),
        pytest.param(b"a=%FF", ContextNotUtf8, id="escaped-bad-utf8"),
        pytest.param(b"a=50%", ContextMalformed, id="bare-percent"),
        pytest.param(b"a=%zz", ContextMalformed, id="non-hex-escape"),
        pytest.param(b"a=%4", ContextMalformed, id="short-escape"),
        pytest.param(b"a=" + b"v" * 255, ContextTooLarge, id="257-bytes"),
    ],
)
def test_decode_context_rejects(data: bytes, error: type[ContextError]) -> None:
    with pytest.raises(error) as info:
        decode_context(data)
    assert info.value.reason == error.reason


@pytest.mark.parametrize(
    ("size", "limit", "ok"),
    [
        (256, None, True),
        (257, None, False),
        (10, 10, True),
        (11, 10, False),
    ],
)
def test_decode_context_size_boundary(size: int, limit: int | None, ok: bool) -> None:
    data = b"k=" + b"v" * (size - 2)
    assert len(data) == size
    # limit None exercises the default, which must be 256.
    kwargs = {} if limit is None else {"max_bytes": limit}
    if ok:
        assert decode_context(data, **kwargs).get("k") == "v" * (size - 2)
    else:
        with pytest.raises(ContextTooLarge):
            decode_context(data, **kwargs)


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        pytest.param({"business_hours": "priority"}, SEED_TEXT, id="seed-mapping"),
        pytest.param([("escalate_to", "agents-queue")], b"escalate_to=agents-queue", id="pairs"),
        pytest.param((("a", "1"), ("b", "2")), b"a=1;b=2", id="order-kept"),
        pytest.param({"a": ";&=%"}, b"a=%3B%26%3D%25", id="separators-escaped"),
        pytest.param({"a": " x "}, b"a=%20x%20", id="edge-spaces"),
        pytest.param({"a": "   "}, b"a=%20%20%20", id="only-spaces"),
        pytest.param({"a": "b c"}, b"a=b c", id="inner-space"),
        pytest.param({"a": ""}, b"a=", id="empty-value"),
        pytest.param({"a": "Zoë"}, "a=Zoë".encode(), id="utf8"),
    ],
)
def test_encode_context(ctx: dict[str, str] | list[tuple[str, str]], expected: bytes) -> None:
    assert encode_context(ctx) == expected
    assert decode_context(expected).pairs == tuple(dict(ctx).items())


@pytest.mark.parametrize(
    ("ctx", "error"),
    [
        pytest.param({}, ContextMissing, id="empty-mapping"),
        pytest.param([], ContextMissing, id="empty-list"),
        pytest.param([("", "x")], ContextEmptyKey, id="empty-key"),
        pytest.param([("a b", "x")], ContextBadPair, id="bad-key"),
        pytest.param([("a=b", "x")], ContextBadPair, id="equals-in-key"),
        pytest.param([("a", "1"), ("A", "2")], ContextDuplicateKey, id="duplicate"),
        pytest.param([("a", "x\ny")], ContextControlChars, id="control"),
        pytest.param([("a", "\x85")], ContextControlChars, id="c1"),
        pytest.param([("a", "\ud800")], ContextNotUtf8, id="surrogate"),
    ],
)
def test_encode_context_rejects(ctx: list[tuple[str, str]], error: type[ContextError]) -> None:
    with pytest.raises(error):
        encode_context(ctx)


def test_encode_context_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        encode_context("a=b")  # type: ignore[arg-type]


def test_context_accessors() -> None:
    ctx = decode_context(b"Escalate_To=agents;note=x")
    assert ctx.get("escalate_to") == "agents"
    assert ctx.get("ESCALATE_TO") == "agents"
    assert ctx.get("missing") is None
    assert ctx.as_dict() == {"Escalate_To": "agents", "note": "x"}
    assert ctx
    assert not Context()
    assert Context().as_dict() == {}


# --------------------------------------------------------------------------------------------
# safe_value / safe_key
# --------------------------------------------------------------------------------------------

INJECTIONS = [
    "${SHELL(rm -rf /)}",
    "$[1+1]",
    "${CALLERID(num)}",
    "agents,60,tT",
    "agents|60",
    "agents&PJSIP/evil@trunk",
    '"quoted"',
    "it's",
    "back\\slash",
    "semi;colon",
    "line\nbreak",
    "cr\rlf",
    "header\r\nX-Evil: 1",
    "(paren)",
    "^caret",
    "%{x}",
    "`cmd`",
    "\x00nul\x7f\x85",
    "Set(FOO=bar)",
    "<sip:evil@h>",
    "#*!~?",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_safe_value_neutralises_injection(text: str) -> None:
    out = safe_value(text)
    assert not FORBIDDEN & set(out)
    assert set(out) <= SAFE_VALUE_ALPHABET
    assert len(out) == len(text)


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("agents-queue", {}, "agents-queue"),
        ("sip:+15551234@pbx.example.com/x", {}, "sip:+15551234@pbx.example.com/x"),
        ("Hello World", {}, "Hello World"),
        ("${X}", {}, "__X_"),
        ("a,b|c", {}, "a_b_c"),
        ("Zoë", {}, "Zo_"),
        ("東京", {}, "__"),
        ("", {}, ""),
        ("x" * 300, {}, "x" * 256),
        ("abcdef", {"max_len": 3}, "abc"),
        ("abc", {"max_len": 0}, ""),
    ],
)
def test_safe_value(text: str, kwargs: dict[str, int], expected: str) -> None:
    assert safe_value(text, **kwargs) == expected


def test_safe_value_rejects_negative_length() -> None:
    with pytest.raises(ValueError):
        safe_value("x", max_len=-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("escalate_to", "ESCALATE_TO"),
        ("business-hours", "BUSINESS_HOURS"),
        ("a.b", "A_B"),
        ("K9", "K9"),
        ("${x}", "__X_"),
        ("straße", "STRA_E"),
        ("ﬁ", "_"),
        ("k" * 40, "K" * MAX_SAFE_KEY_LEN),
    ],
)
def test_safe_key(text: str, expected: str) -> None:
    assert safe_key(text) == expected


def test_safe_key_empty() -> None:
    with pytest.raises(ContextEmptyKey):
        safe_key("")


# --------------------------------------------------------------------------------------------
# Hostile input is refused or bounded
# --------------------------------------------------------------------------------------------

BIG = 1_000_000


@pytest.mark.parametrize(
    ("func", "arg"),
    [
        pytest.param(parse_uui, "6" * BIG, id="parse-huge-hex"),
        pytest.param(parse_uui, '"' + "\\" * BIG, id="parse-huge-escapes"),
        pytest.param(decode_context, b"a=" + b"%" * BIG, id="decode-huge"),
    ],
)
def test_hostile_input_is_refused(func: Any, arg: object) -> None:
    with pytest.raises(ContextError):
        func(arg)


def test_safe_value_is_bounded() -> None:
    assert safe_value("$" * BIG) == "_" * 256


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")

keys = st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True)
# Any text without control characters (Cc covers C0, DEL and C1) or lone surrogates, with
# the separators, escapes and spaces over-represented so the escaping paths get exercised.
values = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cc", "Cs")),
        st.sampled_from(list(";&=% %20")),
    ),
    max_size=40,
)
contexts = st.lists(
    st.tuples(keys, values), min_size=1, max_size=8, unique_by=lambda kv: safe_key(kv[0])
)
param_names = st.from_regex(r"[A-Za-z0-9.!%*_+`'~-]{1,12}", fullmatch=True).filter(
    lambda name: name.lower() != "encoding"
)
param_lists = st.lists(
    st.tuples(param_names, st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)),
    max_size=3,
    unique_by=lambda kv: kv[0].lower(),
)
# Alphabets that hit the interesting branches far more often than uniform text does.
uui_text = st.text(alphabet=st.sampled_from(list('0123456789abcdefABCDEF;=",\\ \tencodinghx')))
context_text = st.text(alphabet=st.sampled_from(list("ab=;&% 0123456789ABCDEF.-_\x00\x85é")))


@PROPERTY
@given(contexts)
def test_context_round_trip(pairs: list[tuple[str, str]]) -> None:
    encoded = encode_context(pairs)
    assert decode_context(encoded, max_bytes=len(encoded) + 1).pairs == tuple(pairs)
    assert encode_context(dict(pairs)) == encoded


@PROPERTY
@given(st.binary(min_size=1, max_size=DEFAULT_MAX_CONTEXT_BYTES), param_lists)
def test_uui_round_trip(data: bytes, params: list[tuple[str, str]]) -> None:
    value = format_uui(data, params=params)
    expected = tuple((name.lower(), v) for name, v in params)
    assert parse_uui(value) == UUI(data=data, encoding="hex", params=expected)
    assert value.split(";", 1)[0] == data.hex()


@PROPERTY
@given(st.binary(min_size=0, max_size=DEFAULT_MAX_CONTEXT_BYTES))
def test_uui_round_trip_with_discriminator(data: bytes) -> None:
    value = format_uui(data, discriminator=True)
    assert value.startswith(f"{UUI_PROTOCOL_DISCRIMINATOR:02x}")
    assert parse_uui(value, discriminator=True).data == data


@PROPERTY
@given(contexts, st.booleans())
def test_full_pipeline_round_trip(pairs: list[tuple[str, str]], discriminator: bool) -> None:
    payload = encode_context(pairs)
    limit = len(payload) + 1
    uui = parse_uui(format_uui(payload, discriminator=discriminator), max_bytes=limit,
                    discriminator=discriminator)  # fmt: skip
    assert decode_context(uui.data, max_bytes=limit).pairs == tuple(pairs)


@PROPERTY
@given(st.one_of(st.text(), uui_text), st.integers(1, 300), st.booleans())
def test_parse_uui_is_total(value: str, limit: int, discriminator: bool) -> None:
    try:
        uui = parse_uui(value, max_bytes=limit, discriminator=discriminator)
    except ContextError:
        return
    assert len(uui.data) <= limit
    assert uui.encoding in (None, "hex", "ascii")
    for name, _ in uui.params:
        assert name == name.lower()
        assert name != "encoding"


@PROPERTY
@given(st.one_of(st.binary(), context_text.map(lambda s: s.encode("utf-8"))), st.integers(1, 300))
def test_decode_context_is_total(data: bytes, limit: int) -> None:
    try:
        ctx = decode_context(data, max_bytes=limit)
    except ContextError:
        return
    assert ctx
    names = [safe_key(key) for key, _ in ctx.pairs]
    assert len(names) == len(set(names))
    for key, value in ctx.pairs:
        assert KEY_RE.fullmatch(key)
        assert not re.search(r"[\x00-\x1f\x7f-\x9f]", value)
    # Anything accepted re-encodes to something that decodes to the same pairs.
    assert decode_context(encode_context(ctx.pairs), max_bytes=10_000) == ctx


@PROPERTY
@given(st.text(), st.integers(0, 300))
def test_safe_value_properties(text: str, max_len: int) -> None:
    out = safe_value(text, max_len=max_len)
    assert set(out) <= SAFE_VALUE_ALPHABET
    assert not FORBIDDEN & set(out)
    assert len(out) == min(len(text), max_len)
    assert safe_value(out, max_len=max_len) == out
    for original, kept in zip(text, out, strict=False):
        assert kept == (original if original in SAFE_VALUE_ALPHABET else "_")


@PROPERTY
@given(st.text(min_size=1))
def test_safe_key_properties(text: str) -> None:
    out = safe_key(text)
    assert re.fullmatch(r"[A-Z0-9_]{1,32}", out)
    assert safe_key(out) == out
