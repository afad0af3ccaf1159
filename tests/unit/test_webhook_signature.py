"""Webhook signatures: ``verify`` and the receiver snippet of docs/webhooks.md, side by side.

Both must accept the signature ``sign`` makes and return False, never raise, for any
malformed header a receiver can be sent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ari_app.reporting.webhooks import sign, verify

SECRET = b"webhook-secret-for-tests"
BODY = b'{"event":"interaction.escalated"}'
TOLERANCE = 300.0
DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"

Verifier = Callable[[bytes, str, bytes], bool]


def _doc_snippet() -> Verifier:
    """The ``verify`` of docs/webhooks.md's Python block, as a receiver would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (code,) = [b for b in blocks if "def verify(" in b]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    snippet = namespace["verify"]

    def check(secret: bytes, header: str, body: bytes) -> bool:
        return bool(snippet(secret, header, body, tolerance=TOLERANCE))

    return check


def _library(secret: bytes, header: str, body: bytes) -> bool:
    return verify(secret, header, body, now=time.time(), tolerance=TOLERANCE)


VERIFIERS = [pytest.param(_library, id="library"), pytest.param(_doc_snippet(), id="doc")]


def _valid(timestamp: int | None = None) -> str:
    return sign(SECRET, int(time.time()) if timestamp is None else timestamp, BODY)


def _digest() -> str:
    return _valid().split("v1=", 1)[1]


def _malformed() -> list[Any]:
    now = int(time.time())
    digest = _digest()
    cases = {
        "non-ASCII digest": f"t={now},v1={digest[:-1]}é",
        "non-ASCII digest only": f"t={now},v1=ééé",
        "non-ASCII timestamp digits": f"t={''.join(chr(0x660 + int(d)) for d in str(now))},"
        f"v1={digest}",
        "fullwidth timestamp digits": f"t=\uff11\uff12\uff13,v1={digest}",
        "thousands of digits": f"t={'9' * 4000},v1={digest}",
        "more digits than int() reads": f"t={'9' * 5000},v1={digest}",
        "negative timestamp": f"t=-{now},v1={digest}",
        "digest too short": f"t={now},v1={digest[:-2]}",
        "digest too long": f"t={now},v1={digest}00",
        "digest not hex": f"t={now},v1={'z' * len(digest)}",
        "digest upper-case": f"t={now},v1={digest.upper()}",
        "no digest": f"t={now}",
        "empty digest": f"t={now},v1=",
        "no timestamp": f"v1={digest}",
        "empty timestamp": f"t=,v1={digest}",
        "no parts": "garbage",
        "empty header": "",
        "only commas": ",,,",
        "old timestamp": _valid(now - 10 * int(TOLERANCE)),
        "future timestamp": _valid(now + 10 * int(TOLERANCE)),
    }
    return [pytest.param(header, id=name) for name, header in cases.items()]


@pytest.mark.parametrize("check", VERIFIERS)
def test_a_valid_signature_verifies(check: Verifier) -> None:
    assert check(SECRET, _valid(), BODY) is True
    # whitespace after the comma, as some receivers' frameworks fold headers
    assert check(SECRET, _valid().replace(",", ", "), BODY) is True


@pytest.mark.parametrize("check", VERIFIERS)
def test_a_changed_body_or_secret_does_not(check: Verifier) -> None:
    header = _valid()
    assert check(SECRET, header, BODY + b" ") is False
    assert check(b"another secret", header, BODY) is False


@pytest.mark.parametrize("header", _malformed())
@pytest.mark.parametrize("check", VERIFIERS)
def test_a_malformed_signature_is_false_not_an_exception(check: Verifier, header: str) -> None:
    assert check(SECRET, header, BODY) is False


def test_a_header_given_as_bytes() -> None:
    now = time.time()
    assert verify(SECRET, _valid().encode(), BODY, now=now, tolerance=TOLERANCE) is True
    bad = f"t={int(now)},v1=".encode() + "é".encode() * 32
    assert verify(SECRET, bad, BODY, now=now, tolerance=TOLERANCE) is False
