"""Headers that travel. What the carrier's INVITE says that a call passes on: the headers
the dialplan read (Stasis() arguments ``hdr.<name>=<base64>``, ari_app/config/headers.py)
checked once per call, and the carrier's caller verification (``verstat``). And the headers
of the bot's REFER that go on to the agent (:func:`copy_bot_headers`).

The dialplan reads every header any profile copies, plus the verstat headers, and
base64-encodes ``":" + value`` (the colon keeps an absent header from being an empty
argument); here they are decoded, each value checked (ari_app/sip/headers.py), and the
verstat verdict taken from the first verstat header that carries one.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ari_app.config.headers import (
    HEADER_ARG_PREFIX,
    QUEUE_ARG_PREFIX,
    QUEUE_CONTEXT_KEYS,
    VERSTAT_HEADERS,
)
from ari_app.records import RecordChange
from ari_app.sip.headers import VERSTAT_ABSENT, HeaderRefused, clean_header_value, verstat_of

__all__ = [
    "HEADER_NOT_BASE64",
    "CallerFacts",
    "CarrierHeaders",
    "caller_facts",
    "copy_bot_headers",
    "log_refused",
    "read_carrier_headers",
    "read_queue_figures",
    "split_inbound_args",
]

log = logging.getLogger(__name__)

# an argument whose value is not the base64 the dialplan makes (a hand-written dialplan)
HEADER_NOT_BASE64 = "header_not_base64"


@dataclass(frozen=True)
class CarrierHeaders:
    """The carrier headers of one call: the values that may be copied (by lower-case
    name), the ones refused with why, and the verstat verdict."""

    values: Mapping[str, str] = field(default_factory=dict)
    refused: tuple[tuple[str, str], ...] = ()
    verstat: str = VERSTAT_ABSENT

    def allowed(self, names: Sequence[str]) -> dict[str, str]:
        """The values of ``names`` (a profile's allow-list) the caller sent, as named there."""
        return {name: self.values[name.lower()] for name in names if name.lower() in self.values}


@dataclass(frozen=True)
class CallerFacts:
    """What the caller's side says about the call: the numbers and the carrier's headers."""

    number: str = ""
    dialled: str = ""
    carrier: CarrierHeaders = field(default_factory=CarrierHeaders)
    # the live figures of the queues the dialplan read as the call came in, by queue name:
    # agents_available, estimated_wait (read_queue_figures)
    queues: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def caller_facts(
    carrier_args: Mapping[str, str],
    opening: RecordChange,
    max_bytes: int,
    queue_args: Mapping[str, str] | None = None,
) -> CallerFacts:
    """The caller's numbers (from the record's ``opening`` fields), carrier headers and
    queue figures, checked once; the verstat joins ``opening`` when the dialplan passed
    headers (an older dialplan passes none: the verstat is then unknown)."""
    carrier = read_carrier_headers(carrier_args, max_bytes)
    if carrier_args:
        opening["verstat"] = carrier.verstat
    number, dialled = opening.get("caller_number"), opening.get("dialled_number")
    return CallerFacts(number or "", dialled or "", carrier, read_queue_figures(queue_args or {}))


def log_refused(interaction_id: str, side: str, refused: Sequence[tuple[str, str]]) -> None:
    """Each header not passed on, with why: never its value (it may be an injection)."""
    for name, reason in refused:
        log.warning("call %s: %s header %s not used: %s", interaction_id, side, name, reason)


def split_inbound_args(
    args: Sequence[str],
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Stasis(app,inbound,...) arguments after "inbound": the business_hours parts (the
    value may hold commas), the header arguments (name -> encoded value) and the queue
    figures arguments (queue -> figures as the dialplan wrote them)."""
    plain: list[str] = []
    headers: dict[str, str] = {}
    queues: dict[str, str] = {}
    for arg in args:
        for prefix, found in ((HEADER_ARG_PREFIX, headers), (QUEUE_ARG_PREFIX, queues)):
            if arg.startswith(prefix) and "=" in arg:
                name, _, value = arg[len(prefix) :].partition("=")
                found[name] = value
                break
        else:
            plain.append(arg)
    return plain, headers, queues


def read_queue_figures(written: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Each queue's figures as the dialplan wrote them, ``<ready>:<found>:<holdtime>``
    (QUEUE_MEMBER(q,ready); QUEUE_VARIABLES(q), "0" when it set the variables; the
    QUEUEHOLDTIME it set), as context values: ``agents_available`` and ``estimated_wait``
    (seconds, app_queue's average hold time), each only when it is a whole number (a queue
    Asterisk did not know has neither)."""
    figures: dict[str, dict[str, str]] = {}
    for queue, text in written.items():
        ready, found, holdtime = [*text.split(":"), "", ""][:3]
        values = (ready, holdtime if found == "0" else "")
        figures[queue] = {
            k: v for k, v in zip(QUEUE_CONTEXT_KEYS, values, strict=True) if v.isdigit()
        }
    return figures


def read_carrier_headers(encoded: Mapping[str, str], max_bytes: int) -> CarrierHeaders:
    """Decode and check every header argument; an absent header is left out."""
    values: dict[str, str] = {}
    refused: list[tuple[str, str]] = []
    for name, text in encoded.items():
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            refused.append((name, HEADER_NOT_BASE64))
            continue
        raw = raw[1:] if raw[:1] == b":" else raw
        if not raw:
            continue
        try:
            values[name.lower()] = clean_header_value(raw, max_bytes)
        except HeaderRefused as exc:
            refused.append((name, exc.reason))
    verdicts = (verstat_of(values.get(name.lower())) for name in VERSTAT_HEADERS)
    verstat = next((v for v in verdicts if v is not None), VERSTAT_ABSENT)
    return CarrierHeaders(values, tuple(refused), verstat)


def copy_bot_headers(
    headers: Mapping[str, str], allowed: Sequence[str], max_bytes: int
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The headers of the bot's REFER that ``allowed`` (a profile's bot_headers) names, as
    named there, each value checked like a carrier's; and the ones refused, with why."""
    sent = {name.lower(): value for name, value in headers.items()}
    copied: dict[str, str] = {}
    refused: list[tuple[str, str]] = []
    for name in allowed:
        value = sent.get(name.lower())
        if value is None:
            continue
        try:
            copied[name] = clean_header_value(value.encode("utf-8", "replace"), max_bytes)
        except HeaderRefused as exc:
            refused.append((name, exc.reason))
    return copied, refused
