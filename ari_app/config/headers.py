"""Headers that travel: the carrier's INVITE headers a profile copies onto its bot's INVITE,
the extra context keys of the bot's User-to-User, and the carrier's caller verification
(``verstat``), as settings (docs/configuration.md, "Headers that travel").

The dialplan reads the carrier headers once per call and hands them to the app in its
Stasis() arguments, one argument ``hdr.<name>=<base64>`` per header, so that copying them
costs no ARI request (ari_app/asterisk renders the arguments, ari_app/sip/headers.py reads
them back). Here: the names that argument uses and the rules a configured name must keep.
"""

from __future__ import annotations

from collections.abc import Iterable

from ari_app.config.values import invalid

__all__ = [
    "AGENT_HEADER_VARIABLE_PREFIX",
    "CONTEXT_KEYS",
    "DIALPLAN_ARGS_BUDGET",
    "HEADER_ARG_PREFIX",
    "QUEUE_ARG_PREFIX",
    "QUEUE_CONTEXT_KEYS",
    "RESERVED_HEADERS",
    "VERSTAT_HEADERS",
    "VERSTAT_VERDICTS",
    "agent_header_variable",
    "agent_headers",
    "check_bot_headers",
    "check_carrier_headers",
    "dialplan_headers",
    "figures_queues",
    "header_arg_bytes",
]

# a Stasis() argument carrying one carrier header: hdr.<name>=<base64 of ":" + value>
HEADER_ARG_PREFIX = "hdr."
# the headers whose verstat parameter is the carrier's caller verification, in the order
# they are looked at (RFC 8224 / ATIS-1000074: P-Asserted-Identity, else From); always read
VERSTAT_HEADERS = ("P-Asserted-Identity", "From")
# the verdicts a call's verstat can be (ari_app/sip/headers.py reads it; the configuration
# may not import it): ATIS-1000074's three, then "absent" and "unrecognised"
VERSTAT_VERDICTS = (
    "TN-Validation-Passed",
    "TN-Validation-Failed",
    "No-TN-Validation",
    "absent",
    "unrecognised",
)
# the extra keys of the bot's User-to-User that are the live figures of the profile's
# default_queue, read by the dialplan (QUEUE_MEMBER ready, QUEUE_VARIABLES QUEUEHOLDTIME)
QUEUE_CONTEXT_KEYS = ("agents_available", "estimated_wait")
# the extra keys a profile may add to the bot's User-to-User, after business_hours
CONTEXT_KEYS = ("dialled", "caller", "verstat", *QUEUE_CONTEXT_KEYS)
# a Stasis() argument carrying one queue's live figures: queue.<name>=<ready>:<found>:<hold>
QUEUE_ARG_PREFIX = "queue."
# the longest figures part of that argument: two numbers and the found flag
QUEUE_FIGURES_BYTES = 2 * 20 + 3
# headers of the bot's INVITE that Asterisk or the bridge itself sets: a copy would make a
# second, conflicting one (compared case-insensitively)
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Authorization",
        "Proxy-Authorization",
        "Expires",
        "Allow",
        "Supported",
        "Require",
        "Session-Expires",
        "Min-SE",
        "User-Agent",
        "User-to-User",
        "x-User-to-User",
    )
)
# Asterisk substitutes a dialplan application's arguments into a buffer of 8192 bytes
# (pbx.c, EXT_DATA_SIZE); the header arguments keep to this share of it, the rest is left
# to the app name, "inbound" and business_hours
DIALPLAN_ARGS_BUDGET = 7168


def header_arg_bytes(name: str, max_value_bytes: int) -> int:
    """The longest Stasis() argument one header can take: prefix, name, "=", and the base64
    of ":" plus at most ``max_value_bytes + 1`` bytes (one more, so that an oversize value
    is seen to be one)."""
    encoded = 4 * -(-(max_value_bytes + 2) // 3)
    return 1 + len(HEADER_ARG_PREFIX) + len(name) + 1 + encoded


def dialplan_headers(allow_lists: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Every header the dialplan reads: the verstat headers, then each profile's carrier
    headers (``allow_lists``), each name once (case-insensitively), in order."""
    names: dict[str, str] = {}
    for name in (*VERSTAT_HEADERS, *(h for allowed in allow_lists for h in allowed)):
        names.setdefault(name.lower(), name)
    return tuple(names.values())


def figures_queues(wanted: Iterable[tuple[str, Iterable[str]]]) -> tuple[str, ...]:
    """The queues whose live figures the dialplan reads: the default_queue of each profile
    (``wanted``: its default_queue and its context_keys) that asks for a QUEUE_CONTEXT_KEYS
    key, each once, in order."""
    queues: dict[str, None] = {}
    for queue, keys in wanted:
        if set(keys) & set(QUEUE_CONTEXT_KEYS):
            queues.setdefault(queue)
    return tuple(queues)


def check_carrier_headers(
    allow_lists: Iterable[Iterable[str]], max_value_bytes: int, queues: Iterable[str] = ()
) -> None:
    """Rules across profiles: the dialplan's header (and queue figures) arguments fit
    Asterisk's buffer."""
    names = dialplan_headers(allow_lists)
    needed = sum(header_arg_bytes(name, max_value_bytes) for name in names)
    needed += sum(1 + len(QUEUE_ARG_PREFIX) + len(q) + 1 + QUEUE_FIGURES_BYTES for q in queues)
    if needed > DIALPLAN_ARGS_BUDGET:
        raise invalid(
            "profiles",
            f"the carrier_headers of all profiles ({len(names)} headers with the verstat "
            f"ones, up to {needed} bytes of dialplan arguments at [bridge] max_header_bytes = "
            f"{max_value_bytes}, with the queue figures) exceed {DIALPLAN_ARGS_BUDGET} bytes; "
            "list fewer headers or lower max_header_bytes",
        )


def check_profile_headers(
    carrier_headers: tuple[str, ...], interaction_header: str, verstat_header: str
) -> None:
    """One profile's header settings (raise :func:`invalid`): no copied header the bridge
    or Asterisk sets itself, none listed twice."""
    own = {interaction_header.lower(), verstat_header.lower()} - {""}
    for name in carrier_headers:
        if name.lower() in RESERVED_HEADERS or name.lower() in own:
            raise invalid(
                "carrier_headers", f"{name!r} is a header the bridge or Asterisk sets itself"
            )
    if len({n.lower() for n in carrier_headers}) != len(carrier_headers):
        raise invalid("carrier_headers", "a header is listed twice")
    if verstat_header.lower() in RESERVED_HEADERS:
        raise invalid("verstat_header", f"{verstat_header!r} is a header the bridge sets itself")


# the caller's variables that carry the bot's headers to the agent's channel
AGENT_HEADER_VARIABLE_PREFIX = "BOTBRIDGE_HDR_"
# the agent's INVITE gets the bot's own headers from these fixed ones already: never copied
AGENT_SET_HEADERS = frozenset({"x-escalate-to", "x-interaction-id"})


def check_bot_headers(bot_headers: tuple[str, ...]) -> None:
    """A profile's bot_headers (raise :func:`invalid`): none the agent's INVITE carries
    anyway or Asterisk sets, none listed twice."""
    for name in bot_headers:
        if name.lower() in RESERVED_HEADERS | AGENT_SET_HEADERS:
            raise invalid("bot_headers", f"{name!r} is a header the bridge or Asterisk sets itself")
    if len({n.lower() for n in bot_headers}) != len(bot_headers):
        raise invalid("bot_headers", "a header is listed twice")


def agent_header_variable(name: str) -> str:
    """The caller's channel variable (inherited by the agent's channel) that carries the
    bot's header ``name``, base64-encoded: ``BOTBRIDGE_HDR_<NAME>`` ("-" as "_")."""
    return AGENT_HEADER_VARIABLE_PREFIX + name.upper().replace("-", "_")


def agent_headers(allow_lists: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Every header some profile copies from its bot's REFER, each once (case-insensitively)."""
    names: dict[str, str] = {}
    for name in (h for allowed in allow_lists for h in allowed):
        names.setdefault(name.lower(), name)
    return tuple(names.values())
