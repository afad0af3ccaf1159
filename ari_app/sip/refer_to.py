"""The Refer-To of the bot's REFER, parsed once into a typed `ReferTo`.

Asterisk hands the header over in `HASH(TRANSFER_DATA,Refer-To)` exactly as the bot sent it,
still percent-encoded, e.g.

    <sip:escalation@127.0.0.1?User-to-User=6573...%3Bencoding%3Dhex&Replaces=...>

`parse_refer_to` is pure and total: it returns a `ReferTo` or raises a `ReferToError`, which is
also a `uui.ContextError`, so its `reason` is one of the stable codes of `ari_app.sip.uui`
(`context_malformed`, `context_not_utf8`). Error messages never echo the input.

Rules, in short (docs/context-codec.md has the full list):

* accepted forms: `<uri>`, `"Display" <uri>`, `Display <uri>`, each optionally followed by
  header parameters (`;name=value`), and a bare `uri` (no angle brackets; everything is then
  part of the URI). The scheme is `sip`, `sips` or `tel`, in any case;
* `user`, URI parameters and URI headers (names and values) are percent-decoded, each on its
  own. `+` is a literal plus. A bad escape (`%`, `%4`, `%zz`) anywhere in them is
  `context_malformed`; an escape that is not UTF-8 is `context_not_utf8`;
* control characters are *not* an error here: they are well-formed escapes, and what they
  mean is the caller's business. In particular an escaped control character in the user part
  never spoils the headers: the User-to-User value is what `uui.parse_uui` judges, and the
  user part is untrusted text that must go through an allow-list (or `uui.safe_value`) before
  it reaches Asterisk or a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from ari_app.sip.uui import ContextError, ContextMalformed, ContextNotUtf8, split_outside_quotes

__all__ = [
    "SCHEMES",
    "USER_TO_USER_HEADERS",
    "ReferTo",
    "ReferToError",
    "ReferToMalformed",
    "ReferToNotUtf8",
    "parse_refer_to",
]

# URI schemes a Refer-To may use here; Asterisk itself refuses anything but sip/sips.
SCHEMES = frozenset({"sip", "sips", "tel"})

# URI headers that may carry the bot's context, in order of preference.
USER_TO_USER_HEADERS = ("User-to-User", "x-User-to-User")
# Longest Refer-To parsed: far above any real one (a 256-byte context is about 1,100
# characters hex- and percent-encoded), so a hostile value costs nothing to refuse.
MAX_REFER_TO_CHARS = 8192


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ReferToError(ContextError):
    """Base class of what `parse_refer_to` raises.

    It defines no `reason` of its own: each subclass also derives from the `uui` error whose
    stable reason code it reports.
    """


class ReferToMalformed(ReferToError, ContextMalformed):
    """Broken structure or a bad percent-escape (`context_malformed`)."""


class ReferToNotUtf8(ReferToError, ContextNotUtf8):
    """A percent-escape that does not decode to UTF-8 (`context_not_utf8`)."""


# --------------------------------------------------------------------------------------------
# The value
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReferTo:
    """One parsed Refer-To header value.

    `uri` is the URI as sent (scheme, user, host, URI parameters; no `?headers`), still
    percent-encoded. Every other text field is percent-decoded and untrusted.
    """

    uri: str
    scheme: str  # lower case: "sip", "sips" or "tel"
    display_name: str | None = None  # None without a display name; quotes/escapes removed
    user: str | None = None  # sip/sips user (password dropped) or tel number; None if empty
    host: str | None = None  # None for tel:; IPv6 references keep their brackets
    port: int | None = None
    uri_params: tuple[tuple[str, str], ...] = ()  # `;name=value` inside the URI, in order
    headers: tuple[tuple[str, str], ...] = ()  # `?name=value&...`, in order, duplicates kept
    params: tuple[tuple[str, str], ...] = ()  # header parameters after `>` (not decoded)

    def header(self, name: str) -> str | None:
        """The first URI header called `name` (case-insensitive), or None."""
        wanted = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == wanted:
                return value
        return None

    @property
    def user_to_user(self) -> str | None:
        """The embedded User-to-User value (else x-User-to-User), for `uui.parse_uui`."""
        for name in USER_TO_USER_HEADERS:
            value = self.header(name)
            if value is not None:
                return value
        return None

    @property
    def replaces(self) -> str | None:
        """The embedded Replaces value (`call-id;to-tag=..;from-tag=..`), or None."""
        return self.header("Replaces")

    @property
    def is_attended(self) -> bool:
        """A Refer-To with a Replaces header (even an empty one) asks for an attended transfer."""
        return self.replaces is not None


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def parse_refer_to(text: str) -> ReferTo:
    """Parse a Refer-To header value. Raises `ReferToMalformed` or `ReferToNotUtf8`."""
    if len(text) > MAX_REFER_TO_CHARS:
        raise ReferToMalformed(f"Refer-To longer than {MAX_REFER_TO_CHARS} characters")
    value = text.strip(_LWS)
    if not value:
        raise ReferToMalformed("Refer-To is empty")
    display_name, uri_text, tail = _split_name_addr(value)
    params = _parse_header_params(tail)
    return _parse_uri(uri_text, display_name, params)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

# SIP linear whitespace after unfolding (Asterisk unfolds continuation lines for us).
_LWS = " \t"
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# RFC 3261 quoted-string in "unrolled" form: linear even when the closing quote is missing.
_QUOTED_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters that cannot appear raw in a URI and would mean we cut the header wrongly.
_NOT_IN_URI_RE = re.compile(r'[<>"]')
_PORT_RE = re.compile(r"[0-9]{1,5}")


def _split_name_addr(value: str) -> tuple[str | None, str, str]:
    """Return (display name, URI text, text after `>`) of a name-addr or an addr-spec."""
    if value.startswith('"'):
        # A quoted display name may itself contain "<", ">" and escaped quotes.
        match = _QUOTED_RE.match(value)
        if match is None:
            raise ReferToMalformed("unterminated display name in Refer-To")
        display: str | None = _QUOTED_PAIR_RE.sub(r"\1", match.group()[1:-1])
        rest = value[match.end() :].lstrip(_LWS)
        if not rest.startswith("<"):
            raise ReferToMalformed("Refer-To display name without <uri>")
    else:
        lt = value.find("<")
        if lt < 0:
            # addr-spec: the whole value is the URI, `;params` included
            return None, value, ""
        token = value[:lt].strip(_LWS)
        if '"' in token or ">" in token:
            raise ReferToMalformed("bad display name in Refer-To")
        display = token or None
        rest = value[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise ReferToMalformed("unterminated <uri> in Refer-To")
    return display, rest[1:gt].strip(_LWS), rest[gt + 1 :]


def _parse_header_params(tail: str) -> tuple[tuple[str, str], ...]:
    """`;name=value;...` after `>`; values may be quoted-strings (returned unquoted)."""
    tail = tail.strip(_LWS)
    if not tail:
        return ()
    if not tail.startswith(";"):
        raise ReferToMalformed("unexpected text after the Refer-To <uri>")
    params: list[tuple[str, str]] = []
    for segment in split_outside_quotes(tail[1:], ReferToMalformed, "a Refer-To parameter"):
        raw_name, eq, raw_value = segment.partition("=")
        name = raw_name.strip(_LWS)
        param_value = raw_value.strip(_LWS)
        if not name:
            if eq or param_value:
                raise ReferToMalformed("Refer-To parameter without a name")
            continue  # ";;" or a trailing ";"
        if param_value.startswith('"'):
            if _QUOTED_RE.fullmatch(param_value) is None:
                raise ReferToMalformed("bad quoted-string in a Refer-To parameter")
            param_value = _QUOTED_PAIR_RE.sub(r"\1", param_value[1:-1])
        elif '"' in param_value:
            raise ReferToMalformed("stray quote in a Refer-To parameter")
        params.append((name, param_value))
    return tuple(params)


def _parse_uri(
    uri_text: str, display_name: str | None, params: tuple[tuple[str, str], ...]
) -> ReferTo:
    if _NOT_IN_URI_RE.search(uri_text):
        raise ReferToMalformed("Refer-To URI contains '<', '>' or '\"'")
    match = _SCHEME_RE.match(uri_text)
    if match is None:
        raise ReferToMalformed("Refer-To has no URI scheme")
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise ReferToMalformed("Refer-To URI scheme is not sip, sips or tel")
    # An unescaped "?" starts the headers: it may not appear in the host or URI parameters
    # (and a user part that needs one must escape it).
    body, question, header_text = uri_text[match.end() :].partition("?")
    headers = _parse_uri_headers(header_text) if question else ()

    host: str | None = None
    port: int | None = None
    if scheme == "tel":
        number, _, param_text = body.partition(";")
        user = _percent_decode(number)
    else:
        # An unescaped "@" may not appear in the host or URI parameters, so the first one ends
        # the userinfo; a password follows the first ":". User parameters (`alice;day=x`)
        # stay in the user, as RFC 3261 makes them part of it.
        userinfo, at, hostpart = body.partition("@")
        if not at:
            userinfo, hostpart = "", body
        user = _percent_decode(userinfo.partition(":")[0])
        hostport, _, param_text = hostpart.partition(";")
        host, port = _split_hostport(hostport)
    return ReferTo(
        uri=uri_text[: match.end() + len(body)],
        scheme=scheme,
        display_name=display_name,
        user=user or None,
        host=host,
        port=port,
        uri_params=_parse_uri_params(param_text),
        headers=headers,
        params=params,
    )


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ReferToMalformed("unterminated IPv6 reference in Refer-To")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ReferToMalformed("unexpected text after the Refer-To host")
        port_text: str | None = rest[1:] if rest else None
    else:
        host, colon, after = hostport.partition(":")
        port_text = after if colon else None
    if len(host.strip(_LWS)) != len(host) or not host or host == "[]":
        raise ReferToMalformed("Refer-To URI has no host")
    if port_text is None:
        return host, None
    if not _PORT_RE.fullmatch(port_text) or int(port_text) > 65535:
        raise ReferToMalformed("bad port in Refer-To URI")
    return host, int(port_text)


def _parse_uri_params(text: str) -> tuple[tuple[str, str], ...]:
    params: list[tuple[str, str]] = []
    for segment in text.split(";") if text else ():
        raw_name, eq, raw_value = segment.partition("=")
        if not raw_name:
            if eq or raw_value:
                raise ReferToMalformed("Refer-To URI parameter without a name")
            continue  # ";;" or a trailing ";"
        params.append((_percent_decode(raw_name), _percent_decode(raw_value)))
    return tuple(params)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for field in text.split("&"):
        if not field:
            continue  # "?&a=b", "a=b&&c=d", "a=b&"
        raw_name, _, raw_value = field.partition("=")
        name = _percent_decode(raw_name).strip(_LWS)
        if not name:
            raise ReferToMalformed("Refer-To URI header without a name")
        headers.append((name, _percent_decode(raw_value)))
    return tuple(headers)


def _percent_decode(text: str) -> str:
    if _BAD_ESCAPE_RE.search(text):
        raise ReferToMalformed("bad percent-escape in Refer-To")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeError:
        # Covers both non-UTF-8 escapes and lone surrogates in the input string.
        raise ReferToNotUtf8("percent-decoded Refer-To text is not valid UTF-8") from None
