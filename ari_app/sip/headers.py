"""Header values that cross the bridge from one party to another, and the carrier's caller
verification (``verstat``).

Pure, like the context codec (ari_app/sip/uui.py): a value from a caller's INVITE is
untrusted, so :func:`clean_header_value` either returns text that is safe to put into
another party's SIP header, or raises :class:`HeaderRefused` with a stable ``reason`` code
(for the log and the metrics). The message never echoes the value.

Rules (docs/security.md, "Headers that travel"): printable ASCII (0x20-0x7E) and TAB only;
CR or LF anywhere (a header injection), any other control character, a byte above 0x7E, or
more than ``max_bytes`` bytes refuse the whole value. Nothing is repaired: a value is
copied as it came or not at all.

``verstat`` (RFC 8224 section 6.2.4, ATIS-1000074): the carrier's STIR/SHAKEN verdict, a
parameter of the caller's URI in ``P-Asserted-Identity`` (else ``From``), e.g.
``<sip:+12155551212;verstat=TN-Validation-Passed@carrier.example;user=phone>`` or
``<tel:+12155551212;verstat=TN-Validation-Failed>``.
"""

from __future__ import annotations

import re

__all__ = [
    "HEADER_CONTROL_CHARS",
    "HEADER_CRLF",
    "HEADER_NOT_ASCII",
    "HEADER_TOO_LARGE",
    "VERSTAT_ABSENT",
    "VERSTAT_UNRECOGNISED",
    "VERSTAT_VALUES",
    "HeaderRefused",
    "clean_header_value",
    "verstat_base",
    "verstat_of",
]

HEADER_TOO_LARGE = "header_too_large"
HEADER_CRLF = "header_crlf"
HEADER_CONTROL_CHARS = "header_control_chars"
HEADER_NOT_ASCII = "header_not_ascii"

# the verdicts ATIS-1000074 defines; some carriers add the attestation level (-A, -B, -C)
VERSTAT_VALUES = ("TN-Validation-Passed", "TN-Validation-Failed", "No-TN-Validation")
# no verstat parameter where the carrier would put one
VERSTAT_ABSENT = "absent"
# a verstat parameter whose value is none of VERSTAT_VALUES (never passed on as it came)
VERSTAT_UNRECOGNISED = "unrecognised"

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSTAT = re.compile(r"[;?&]verstat=([^;>@&?,\s]*)", re.IGNORECASE)
_VERSTAT_VALUE = re.compile(
    r"(TN-Validation-Passed|TN-Validation-Failed)(-[ABC])?|No-TN-Validation", re.IGNORECASE
)
_CANONICAL = {v.lower(): v for v in VERSTAT_VALUES}


class HeaderRefused(ValueError):
    """A header value that is not copied; ``reason`` is one of the HEADER_* codes."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def clean_header_value(raw: bytes, max_bytes: int) -> str:
    """``raw`` as header text, unchanged, or :class:`HeaderRefused`."""
    if len(raw) > max_bytes:
        raise HeaderRefused(HEADER_TOO_LARGE, f"value longer than {max_bytes} bytes")
    if b"\r" in raw or b"\n" in raw:
        raise HeaderRefused(HEADER_CRLF, "value holds CR or LF")
    if _CONTROL.search(raw):
        raise HeaderRefused(HEADER_CONTROL_CHARS, "value holds control characters")
    if not raw.isascii():
        raise HeaderRefused(HEADER_NOT_ASCII, "value holds bytes outside ASCII")
    return raw.decode("ascii")


def verstat_of(value: str | None) -> str | None:
    """The verstat verdict of a P-Asserted-Identity or From value: one of VERSTAT_VALUES
    (with its attestation suffix, if any, in canonical case), VERSTAT_UNRECOGNISED, or None
    when the value carries no verstat parameter (or there is no value)."""
    if not value:
        return None
    found = _VERSTAT.search(value)
    if found is None:
        return None
    verdict = found.group(1)
    match = _VERSTAT_VALUE.fullmatch(verdict)
    if match is None:
        return VERSTAT_UNRECOGNISED
    base = _CANONICAL[(match.group(1) or verdict).lower()]
    return base + (match.group(2) or "").upper()


def verstat_base(verdict: str) -> str:
    """A verdict of :func:`verstat_of` without its attestation suffix (``-A``, ``-B``, ``-C``)."""
    match = _VERSTAT_VALUE.fullmatch(verdict)
    return _CANONICAL[match.group(1).lower()] if match and match.group(2) else verdict
