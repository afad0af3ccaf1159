"""User-to-User (RFC 7433) and bot-context codec.

Everything here is pure: no I/O, no logging, no mutable module state. Data that arrives from a
bot is untrusted, so every parser is total: it returns a value or raises a `ContextError`
subclass whose `reason` is a stable snake_case code (fit for metrics and for the channel
variable that records why a transfer was refused). Error messages never echo the offending
input, so they can be logged without opening a log-injection hole.

The wire formats and every decision taken here are described in docs/context-codec.md.
The Refer-To header that carries the bot's UUI is parsed by `ari_app.sip.parse_refer_to`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = [
    "DEFAULT_MAX_CONTEXT_BYTES",
    "MAX_SAFE_KEY_LEN",
    "SAFE_VALUE_ALPHABET",
    "UUI",
    "UUI_PROTOCOL_DISCRIMINATOR",
    "Context",
    "ContextBadPair",
    "ContextControlChars",
    "ContextDuplicateKey",
    "ContextEmptyKey",
    "ContextError",
    "ContextMalformed",
    "ContextMissing",
    "ContextNotUtf8",
    "ContextTooLarge",
    "context_payload",
    "decode_context",
    "decode_uui_context",
    "encode_context",
    "format_uui",
    "max_uui_value_chars",
    "parse_uui",
    "safe_key",
    "safe_value",
]

DEFAULT_MAX_CONTEXT_BYTES = 256

# Q.931 user-user IE protocol discriminator "IA5 characters". Our payload is `key=value` text,
# and 0x04 is what ISDN-derived contact-centre platforms send and expect for textual UUI.
UUI_PROTOCOL_DISCRIMINATOR = 0x04

# Q.931 protocol discriminator values (0x00 user-specific .. 0x08 Q.931/I.451): a leading
# octet in this range in front of text is a discriminator (a context never starts with a
# control character). Platforms send 0x00 (Avaya shared UUI), 0x04 (IA5 text) and 0x08.
PROTOCOL_DISCRIMINATORS = range(0x00, 0x09)
# Avaya "shared UUI": discriminator 0x00, then items of tag octet, length octet, value.
SHARED_UUI_DISCRIMINATOR = 0x00

# Channel-variable name suffixes stay short so `BOTCTX_<KEY>` remains readable in dialplan.
MAX_SAFE_KEY_LEN = 32

# Characters `safe_value` lets through unchanged; everything else becomes "_".
SAFE_VALUE_ALPHABET = frozenset(string.ascii_letters + string.digits + " _.:@+/-")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ContextError(ValueError):
    """Base class: the context/UUI could not be used. `reason` is a stable code."""

    reason: str = "context_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ContextMissing(ContextError):
    reason = "context_missing"


class ContextTooLarge(ContextError):
    reason = "context_too_large"


class ContextMalformed(ContextError):
    reason = "context_malformed"


class ContextNotUtf8(ContextError):
    reason = "context_not_utf8"


class ContextControlChars(ContextError):
    reason = "context_control_chars"


class ContextDuplicateKey(ContextError):
    reason = "context_duplicate_key"


class ContextEmptyKey(ContextError):
    reason = "context_empty_key"


class ContextBadPair(ContextError):
    reason = "context_bad_pair"


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UUI:
    """One parsed User-to-User value."""

    data: bytes
    encoding: str | None
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Context:
    """Ordered key/value pairs carried in the UUI payload.

    Built by `decode_context`, which guarantees that no two keys map to the same
    `safe_key`, so lookups by name are unambiguous.
    """

    pairs: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        # Case-insensitive: keys end up as upper-case channel-variable names anyway, and a bot
        # writing `Escalate_To` means the same thing as `escalate_to`.
        wanted = key.lower()
        for name, value in self.pairs:
            if name.lower() == wanted:
                return value
        return None

    def as_dict(self) -> dict[str, str]:
        return dict(self.pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def parse_uui(
    value: str,
    *,
    max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
    discriminator: bool = False,
) -> UUI:
    """Parse one RFC 7433 `uui-value` (`<data>;param=value;...`).

    `data` in the result is the decoded payload, with the leading protocol-discriminator
    octet removed when `discriminator` is true. Raises a `ContextError` subclass.
    """
    _check_limit(max_bytes)
    extra = 1 if discriminator else 0
    max_data_chars = 2 * (max_bytes + extra)
    if len(value) > max_uui_value_chars(max_bytes, discriminator=discriminator):
        raise ContextTooLarge("UUI value is longer than any acceptable payload")

    segments = _split_uui_value(value)
    data_text = _unquote(segments[0].strip(_LWS))
    if not data_text:
        raise ContextMissing("UUI value has no data")
    if len(data_text) > max_data_chars:
        raise ContextTooLarge(f"UUI data exceeds {max_bytes} bytes")

    encoding, params = _parse_uui_params(segments[1:])
    raw = _decode_uui_data(data_text, encoding, discriminator)
    if discriminator:
        # `raw` is never empty here (empty data was rejected above), so the octet exists.
        raw = raw[1:]
    if len(raw) > max_bytes:
        raise ContextTooLarge(f"UUI data is {len(raw)} bytes, limit is {max_bytes}")
    return UUI(data=raw, encoding=encoding, params=params)


def max_uui_value_chars(max_bytes: int, *, discriminator: bool = False) -> int:
    """The longest `uui-value` :func:`parse_uui` can accept for ``max_bytes`` of data: hex
    needs 2 chars per byte (plain text at least 1), a quoted-string adds 2 quotes, and
    params/whitespace get a fixed allowance. Longer values are refused before any parsing."""
    return 2 * (max_bytes + (1 if discriminator else 0)) + 2 + _PARAMS_ALLOWANCE


def format_uui(
    data: bytes,
    *,
    params: Sequence[tuple[str, str]] = (),
    discriminator: bool = False,
) -> str:
    """Render `data` as `<lower-case hex>;encoding=hex[;name=value...]`.

    With `discriminator`, the octet `UUI_PROTOCOL_DISCRIMINATOR` is prepended. Parameter
    names are lower-cased; values that are not SIP tokens are sent as quoted-strings.
    No size limit is applied here: the limit is a property of the receiver.
    """
    payload = bytes([UUI_PROTOCOL_DISCRIMINATOR]) + bytes(data) if discriminator else bytes(data)
    if not payload:
        # RFC 7433 uui-data is never empty, and parse_uui would reject it.
        raise ContextMissing("cannot format empty UUI data")
    parts = [payload.hex(), "encoding=hex"]
    seen = {"encoding"}
    for name, param_value in params:
        lname = name.lower()
        if not _TOKEN_RE.fullmatch(lname):
            raise ContextMalformed("UUI parameter name is not a SIP token")
        if lname in seen:
            raise ContextMalformed("UUI parameter given twice (or 'encoding' given explicitly)")
        seen.add(lname)
        parts.append(_format_param(lname, param_value))
    return ";".join(parts)


def context_payload(parsed: UUI) -> bytes:
    """The context text inside a parsed UUI value, whatever framing the sender's platform adds.

    - a ``pd`` parameter says the data carries no discriminator octet: the data as is;
    - a leading protocol-discriminator octet (0x00-0x08) in front of text is removed
      (``04`` + hex of ``escalate_to=...``, as ISDN-derived platforms send);
    - Avaya shared UUI (0x00, then tag/length/value items, e.g. the UCID item ``FA 08 ...``)
      yields the first item whose value is text; binary items such as the UCID are skipped;
    - anything else is returned unchanged, for :func:`decode_context` to judge.
    docs/context-codec.md lists each platform's format and its source.
    """
    data = parsed.data
    if any(name == "pd" for name, _ in parsed.params) or not data:
        return data
    if data[0] not in PROTOCOL_DISCRIMINATORS:
        return data
    if _is_printable_utf8(data[1:]):
        return data[1:]
    shared = _shared_uui_text(data)
    return data if shared is None else shared


def decode_uui_context(parsed: UUI, *, max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES) -> Context:
    """:func:`decode_context` of :func:`context_payload`: a bot's context from its UUI."""
    return decode_context(context_payload(parsed), max_bytes=max_bytes)


def decode_context(data: bytes, *, max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES) -> Context:
    """Decode `key=value;key=value` (UTF-8, `&` accepted as an alternate separator)."""
    _check_limit(max_bytes)
    if len(data) > max_bytes:
        raise ContextTooLarge(f"context is {len(data)} bytes, limit is {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ContextNotUtf8("context is not valid UTF-8") from None
    if _CONTROL_RE.search(text):
        raise ContextControlChars("context contains control characters")

    body = text.strip(" ")
    # One trailing separator is tolerated: several bot SDKs join with a terminator.
    if body and body[-1] in _PAIR_SEPARATORS:
        body = body[:-1].rstrip(" ")
    if not body:
        raise ContextMissing("context is empty")

    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for segment in _PAIR_SPLIT_RE.split(body):
        key, value = _decode_pair(segment)
        # Keys that would become the same channel variable are ambiguous, so reject them.
        normalised = safe_key(key)
        if normalised in seen:
            raise ContextDuplicateKey("context repeats a key")
        seen.add(normalised)
        pairs.append((key, value))
    return Context(pairs=tuple(pairs))


def encode_context(ctx: Mapping[str, str] | Sequence[tuple[str, str]]) -> bytes:
    """Encode pairs as `key=value;...` UTF-8; `decode_context` inverts it exactly."""
    if isinstance(ctx, str | bytes | bytearray):
        raise TypeError("encode_context takes a mapping or a sequence of (key, value) pairs")
    items = list(ctx.items()) if isinstance(ctx, Mapping) else list(ctx)
    if not items:
        raise ContextMissing("cannot encode an empty context")
    parts: list[str] = []
    seen: set[str] = set()
    for key, value in items:
        _check_key(key)
        normalised = safe_key(key)
        if normalised in seen:
            raise ContextDuplicateKey("context repeats a key")
        seen.add(normalised)
        if _CONTROL_RE.search(value):
            raise ContextControlChars("context value contains control characters")
        parts.append(f"{key}={_escape_value(value)}")
    try:
        return ";".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be represented in UTF-8.
        raise ContextNotUtf8("context value is not encodable as UTF-8") from None


def safe_value(text: str, *, max_len: int = 256) -> str:
    """Restrict `text` to `SAFE_VALUE_ALPHABET`, replacing anything else with "_".

    The result is inert in Asterisk channel variables and SIP header values: no `$`, braces,
    brackets, commas, pipes, ampersands, quotes, backslashes, semicolons, parentheses, `^`,
    `%` or line breaks survive. Replacement is one character for one character, so the result
    is at most `max_len` characters and `safe_value` is idempotent.
    """
    if max_len < 0:
        raise ValueError("max_len must be >= 0")
    # Truncating first keeps the cost proportional to max_len, not to the input.
    return "".join(c if c in SAFE_VALUE_ALPHABET else "_" for c in text[:max_len])


def safe_key(text: str) -> str:
    """Map a context key to an upper-case `[A-Z0-9_]{1,32}` channel-variable name suffix."""
    if not text:
        raise ContextEmptyKey("key is empty")
    return "".join(c.upper() if c in _SAFE_KEY_KEEP else "_" for c in text[:MAX_SAFE_KEY_LEN])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

# SIP linear whitespace after unfolding (Asterisk unfolds continuation lines for us).
_LWS = " \t"
# Room for `;encoding=hex;purpose=...;content=...` plus generous whitespace.
_PARAMS_ALLOWANCE = 512

_PAIR_SEPARATORS = ";&"
_PAIR_SPLIT_RE = re.compile(r"[;&]")
_SAFE_KEY_KEEP = frozenset(string.ascii_letters + string.digits + "_")

# C0 controls, DEL and C1 controls.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEX_RE = re.compile(r"[0-9A-Fa-f]*")
_ENCODINGS = ("hex", "ascii")
# RFC 3261 `token`.
_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# `%` first in meaning, but str.translate is single-pass so order does not matter.
_VALUE_ESCAPES = str.maketrans({"%": "%25", ";": "%3B", "&": "%26", "=": "%3D"})


def _check_limit(max_bytes: int) -> None:
    # A non-positive limit is a configuration bug, not bad input: do not disguise it as one.
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")


def _split_uui_value(value: str) -> list[str]:
    """Split on ";" outside quoted-strings. Only called on length-bounded input. RFC 7433
    allows several comma-separated values in one header field; the caller must pick one.
    Merging them silently could mix contexts, so a comma outside quotes is refused."""
    return split_outside_quotes(value, ContextMalformed, "UUI value", comma_is_error=True)


def split_outside_quotes(
    text: str, error: type[ContextError], what: str, *, comma_is_error: bool = False
) -> list[str]:
    """Split ``text`` on ";" outside quoted-strings (backslash escapes inside); an
    unterminated quote (and, if asked, a comma outside quotes) raises ``error``."""
    segments: list[str] = []
    start = 0
    in_quotes = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == ";":
            segments.append(text[start:i])
            start = i + 1
        elif c == "," and comma_is_error:
            raise error(f"{what} holds more than one value")
        i += 1
    if in_quotes:
        raise error(f"unterminated quoted-string in {what}")
    segments.append(text[start:])
    return segments


def _unquote(segment: str) -> str:
    """Return the content of a quoted-string, or `segment` itself when it is not quoted."""
    if not segment.startswith('"'):
        if '"' in segment:
            raise ContextMalformed("stray quote in UUI value")
        return segment
    if len(segment) < 2 or not segment.endswith('"'):
        raise ContextMalformed("bad quoted-string in UUI value")
    out: list[str] = []
    inner = segment[1:-1]
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            if i + 1 >= len(inner):
                raise ContextMalformed("bad escape in quoted-string")
            out.append(inner[i + 1])
            i += 2
            continue
        if c == '"':
            raise ContextMalformed("stray quote inside quoted-string")
        out.append(c)
        i += 1
    return "".join(out)


def _parse_uui_params(
    segments: Sequence[str],
) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    encoding: str | None = None
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    for segment in segments:
        raw_name, eq, raw_value = segment.partition("=")
        name = raw_name.strip(_LWS).lower()
        if not _TOKEN_RE.fullmatch(name):
            raise ContextMalformed("UUI parameter name is not a SIP token")
        if name in seen:
            raise ContextMalformed("UUI parameter repeated")
        seen.add(name)
        value = _param_value(raw_value.strip(_LWS)) if eq else ""
        if name == "encoding":
            # "hex" is the only encoding RFC 7433 registers; "ascii" is what AudioCodes and
            # Genesys platforms send for readable text. Guessing at others is unsafe.
            if value.lower() not in _ENCODINGS:
                raise ContextMalformed("unsupported UUI encoding")
            encoding = value.lower()
        else:
            params.append((name, value))
    return encoding, tuple(params)


def _param_value(raw: str) -> str:
    if raw.startswith('"'):
        value = _unquote(raw)
        if _CONTROL_RE.search(value):
            raise ContextMalformed("control character in UUI parameter")
        return value
    if not _TOKEN_RE.fullmatch(raw):
        raise ContextMalformed("UUI parameter value is not a token or quoted-string")
    return raw


def _format_param(name: str, value: str) -> str:
    if value == "":
        return name
    if _TOKEN_RE.fullmatch(value):
        return f"{name}={value}"
    if _CONTROL_RE.search(value):
        raise ContextMalformed("control character in UUI parameter")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def _decode_uui_data(text: str, encoding: str | None, discriminator: bool) -> bytes:
    if encoding == "hex":
        if len(text) % 2 == 0 and _HEX_RE.fullmatch(text):
            return bytes.fromhex(text)
        # Labelled hex but holding "=": a readable context sent with the hex label (hex never
        # contains "="), read as the text it is. Anything else labelled hex must be hex.
        if "=" not in text:
            raise ContextMalformed("UUI data is not valid hex")
    # No encoding parameter (or "ascii"). Platforms differ: some send hex without saying so,
    # others plain ASCII. Hex wins only when it decodes to printable UTF-8 (after a protocol
    # discriminator octet, when one leads), which plain words such as "cafe" or digit
    # strings such as "1234" do not.
    if encoding is None and len(text) % 2 == 0 and _HEX_RE.fullmatch(text):
        raw = bytes.fromhex(text)
        if discriminator:
            if _is_printable_utf8(raw[1:]):
                return raw
        elif _is_printable_utf8(raw) or (
            raw[:1] and raw[0] in PROTOCOL_DISCRIMINATORS and _is_framed_text(raw)
        ):
            return raw
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ContextNotUtf8("UUI data is not encodable as UTF-8") from None


def _is_framed_text(raw: bytes) -> bool:
    """A discriminator octet followed by text, or shared UUI holding a text item."""
    return _is_printable_utf8(raw[1:]) or _shared_uui_text(raw) is not None


def _shared_uui_text(raw: bytes) -> bytes | None:
    """The first text item of Avaya shared UUI (0x00, then tag, length, value items that
    fill the data exactly), or None when ``raw`` is not shared UUI or has no text item."""
    if len(raw) < 3 or raw[0] != SHARED_UUI_DISCRIMINATOR:
        return None
    items: list[bytes] = []
    pos = 1
    while pos < len(raw):
        if pos + 2 > len(raw):
            return None
        length = raw[pos + 1]
        value = raw[pos + 2 : pos + 2 + length]
        if len(value) != length:
            return None
        items.append(value)
        pos += 2 + length
    return next((item for item in items if item and _is_printable_utf8(item)), None)


def _is_printable_utf8(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not _CONTROL_RE.search(text)


def _percent_decode(text: str) -> str:
    if _BAD_ESCAPE_RE.search(text):
        raise ContextMalformed("bad percent-escape")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeError:
        # Covers both non-UTF-8 escapes and lone surrogates in the input string.
        raise ContextNotUtf8("percent-decoded text is not valid UTF-8") from None


def _decode_pair(segment: str) -> tuple[str, str]:
    pair = segment.strip(" ")
    if not pair:
        raise ContextBadPair("empty pair in context")
    raw_key, eq, raw_value = pair.partition("=")
    if not eq:
        raise ContextBadPair("context pair has no '='")
    key = raw_key.strip(" ")
    _check_key(key)
    value = _percent_decode(raw_value.strip(" "))
    if _CONTROL_RE.search(value):
        raise ContextControlChars("context value contains control characters")
    return key, value


def _check_key(key: str) -> None:
    if not key:
        raise ContextEmptyKey("context key is empty")
    if not _KEY_RE.fullmatch(key):
        raise ContextBadPair("context key has characters outside [A-Za-z0-9_.-]")


def _escape_value(value: str) -> str:
    escaped = value.translate(_VALUE_ESCAPES)
    # The decoder trims spaces around values, so edge spaces must be escaped to survive.
    core = escaped.strip(" ")
    if not core:
        return "%20" * len(escaped)
    lead = len(escaped) - len(escaped.lstrip(" "))
    trail = len(escaped) - len(escaped.rstrip(" "))
    return "%20" * lead + core + "%20" * trail
