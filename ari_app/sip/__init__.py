"""SIP header values the bridge reads, each parsed once into a typed value."""

from ari_app.sip.refer_to import (
    SCHEMES,
    USER_TO_USER_HEADERS,
    ReferTo,
    ReferToError,
    ReferToMalformed,
    ReferToNotUtf8,
    parse_refer_to,
)

__all__ = [
    "SCHEMES",
    "USER_TO_USER_HEADERS",
    "ReferTo",
    "ReferToError",
    "ReferToMalformed",
    "ReferToNotUtf8",
    "parse_refer_to",
]
