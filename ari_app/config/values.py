"""The building blocks of the settings: the ``Section`` base and the rules a value must meet.

Every setting is declared once, as a typed field with its default on a frozen ``msgspec``
struct (docs/decisions.md (x)). ``msgspec.convert`` checks types and numeric ranges
(``Annotated[int, Meta(ge=1, le=65535)]``) and names the failing path. What it cannot say
in words a user can act on (a name's allowed characters, a list of choices, an address) is a
:class:`Rule` in the same ``Annotated``, checked when the struct is made, with a message that
says the fix. A rule that fails raises :func:`invalid`, whose key :func:`describe` joins to
the path msgspec reports.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import msgspec

T = TypeVar("T")


class ConfigError(ValueError):
    """Configuration is invalid; the message names the key and what to change."""


@dataclass(frozen=True)
class Rule:
    """A check of one value: ``check`` returns what is wrong with it, or None."""

    check: Callable[[Any], str | None]


def invalid(key: str, message: str) -> ValueError:
    """The error a section raises for its field ``key`` (dotted below the section)."""
    return ValueError(f"`{key}`: {message}")


def matches(pattern: str, error: str) -> Rule:
    """The whole value matches ``pattern`` (``fullmatch``: a trailing newline is refused)."""
    regex = re.compile(pattern)
    return Rule(lambda value: None if regex.fullmatch(value) else error)


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(lambda value: None if value in choices else f"must be one of {', '.join(choices)}")


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "Not a valid IP address."
    return None


def _url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in {"http", "https"} or not parts.hostname or _CONTROL.search(value):
        return "Not a valid URL."
    return None


def _email(value: str) -> str | None:
    return None if _EMAIL.fullmatch(value) else "Not a valid email address."


def _once(values: tuple[str, ...]) -> str | None:
    return None if len(set(values)) == len(values) else "each codec once"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|[^@\s]+@localhost")
IP_ADDRESS = Rule(_ip)
HTTP_URL = Rule(_url)  # http:// or https:// with a host, no control characters
EMAIL = Rule(_email)
EACH_ONCE = Rule(_once)
SINGLE_LINE = matches(r"[^\r\n]*", "must be a single line")
QUEUE_NAME = matches(r"[A-Za-z0-9_-]{1,64}", "must be [A-Za-z0-9_-], 1-64 chars")
ENDPOINT_NAME = matches(r"[A-Za-z0-9_-]{1,64}", "must be [A-Za-z0-9_-]")
HEADER_NAME = matches(r"[A-Za-z0-9-]{1,64}", "must be a SIP header name")
HEADER_VALUE = matches(r"[A-Za-z0-9 _.:@+/=;-]{0,256}", "unsafe characters")
SIP_URI = matches(
    r"sips?:[A-Za-z0-9_.+-]+@[A-Za-z0-9_.:\[\]-]+(;[A-Za-z0-9=_.-]+)*",
    "must be sip:user@host[:port]",
)
CONTEXT_NAME = matches(r"[A-Za-z0-9_-]{0,64}", "must be a dialplan context name")
CIDR_LIST = matches(r"[0-9a-fA-F.:/, ]+", "must be addresses or CIDRs")
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
# codecs the shipped modules.conf loads (docs/media.md); the order of a list is the preference
CODECS = ("g722", "ulaw", "alaw")
Codecs = Annotated[
    tuple[Annotated[str, one_of(CODECS)], ...], msgspec.Meta(min_length=1), EACH_ONCE
]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A frozen settings struct whose :class:`Rule`\\ s are checked when it is made.

    ``_validate`` is the place for rules across fields (raise :func:`invalid`)."""

    def __post_init__(self) -> None:
        for name, (key, hint) in _hints(type(self)).items():
            _check(key, hint, getattr(self, name))
        self._validate()

    def _validate(self) -> None:
        """Rules across this section's fields; none by default."""


@cache
def _hints(cls: type) -> dict[str, tuple[str, Any]]:
    """Field name -> (its TOML key, its type with the Annotated rules)."""
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: (f.encode_name, hints[f.name]) for f in msgspec.structs.fields(cls)}


def _check(key: str, hint: Any, value: Any) -> None:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        _check(key, base, value)
        for rule in extras:
            if isinstance(rule, Rule) and (error := rule.check(value)):
                raise invalid(key, error)
    elif origin is tuple and isinstance(value, tuple):
        item = get_args(hint)[0]
        for i, inner in enumerate(value):
            _check(f"{key}.{i}", item, inner)
    elif origin in (dict, Mapping) and isinstance(value, Mapping):
        key_hint, value_hint = get_args(hint)
        for name, inner in value.items():
            _check(f"{key}.{name}", key_hint, name)
            _check(f"{key}.{name}", value_hint, inner)


_AT = re.compile(r"(?s)(?P<message>.*) - at `\$(?P<path>[^`]*)`")
_OWN = re.compile(r"(?s)`(?P<key>[^`]*)`: (?P<message>.*)")


def describe(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """``section.key: what is wrong`` from msgspec's ``message - at `$.section[0].key```."""
    text = str(exc)
    at = _AT.fullmatch(text)
    message, path = (at["message"], at["path"]) if at else (text, "")
    path = re.sub(r"\[(\d+)\]", r".\1", path).replace("[...]", "")
    own = _OWN.fullmatch(message)
    if own:
        message, path = own["message"], f"{path}.{own['key']}"
    missing = re.fullmatch(r"Object missing required field `(\w+)`", message)
    if missing:
        message, path = "Missing data for required field.", f"{path}.{missing[1]}"
    unknown = re.fullmatch(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        message, path = "Unknown field.", f"{path}.{unknown[1]}"
    where = ".".join(part for part in (prefix.strip("."), path.strip(".")) if part)
    return f"{where}: {message}" if where else message


def convert(data: Any, kind: type[T], *, where: str = "") -> T:
    """``data`` (plain TOML values) as ``kind``; ConfigError naming the key on a bad value."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe(exc, where)}") from exc


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """An exact number or an Asterisk extension pattern (_X., _NXX, [1-5], ., !) as a regex.

    Raises ValueError saying what is wrong with a malformed pattern (an unclosed ``[``, an
    empty or reversed class). Cached: routing compiles each configured pattern once.
    """
    return _compile(pattern)


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    regex = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        ch = body[i]
        if ch in _PATTERN_CLASSES:
            regex.append(_PATTERN_CLASSES[ch])
        elif ch == "[":
            end = body.find("]", i)
            if end < 0:
                raise ValueError(f"{pattern!r}: '[' without a closing ']'")
            if end == i + 1:
                raise ValueError(f"{pattern!r}: empty character class '[]'")
            regex.append("[" + re.escape(body[i + 1 : end]).replace("\\-", "-") + "]")
            i = end
        else:
            regex.append(re.escape(ch))
        i += 1
    try:
        return re.compile("".join(regex))
    except re.error as exc:
        raise ValueError(f"{pattern!r}: {exc.msg}") from exc


_PATTERN_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}


def match_pattern(pattern: str, number: str) -> bool:
    """Asterisk extension pattern match (_X., _NXX, [1-5], ., !) or exact comparison.

    Raises ValueError for a malformed pattern; configured routes are compiled at load
    (``Route``), so routing never meets one.
    """
    return compile_pattern(pattern).fullmatch(number) is not None


def _route_pattern(value: str) -> str | None:
    if not re.fullmatch(r"_[0-9A-Za-z+*#NXZ.!\[\]-]+|[0-9A-Za-z+*#]+", value):
        return "must be an exact number or an Asterisk pattern like _X."
    try:
        compile_pattern(value)
    except ValueError as exc:
        return str(exc)
    return None


ROUTE_PATTERN = Rule(_route_pattern)
