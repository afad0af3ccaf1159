"""The human side: ``[queues.<name>]``, ``[agents.<name>]`` and ``[external_targets.<name>]``
(docs/configuration.md, "Queues, agents and external targets").

Each table is rendered into Asterisk's own files (ari_app/asterisk: queues.conf, pjsip.conf,
extensions.conf). Run-time membership (an agent logging in or out, pausing) is app_queue's
own dynamic membership (ari_app/agents.py), never a rendered file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from msgspec import Meta

from ari_app.config.values import (
    CODECS,
    ENDPOINT_NAME,
    QUEUE_NAME,
    SIP_URI,
    Codecs,
    Rule,
    Section,
    invalid,
    matches,
    one_of,
)

QueueName = Annotated[str, QUEUE_NAME]
# app_queue's strategies (queues.conf strategy)
STRATEGIES = (
    "ringall",
    "leastrecent",
    "fewestcalls",
    "random",
    "rrmemory",
    "rrordered",
    "linear",
    "wrandom",
)
# queues.conf joinempty / leavewhenempty: yes, no, strict, loose or a list of member states
EMPTY_RULE = matches(
    r"yes|no|strict|loose|((paused|penalty|inuse|ringing|unavailable|invalid|unknown|wrapup)"
    r"(,(paused|penalty|inuse|ringing|unavailable|invalid|unknown|wrapup))*)",
    "must be yes, no, strict, loose or a comma list of paused, penalty, inuse, ringing, "
    "unavailable, invalid, unknown, wrapup",
)
# music-on-hold class name (musiconhold.conf); empty: the caller hears ringing
MOH_CLASS = matches(r"[A-Za-z0-9_-]{0,64}", "must be a music-on-hold class name")
# a destination of an external target: a number or a SIP user part, from configuration only
DESTINATION = matches(r"[+0-9A-Za-z*#._-]{1,64}", "must be a number or SIP user part")
# address of an external target: IPv4 address and port (also its signalling allow-list entry)
TRUNK_ADDRESS = matches(
    r"(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}:\d{1,5}",
    "must be an IPv4 address and port, e.g. 192.0.2.10:5060",
)
Penalty = Annotated[int, Meta(ge=0, le=1000)]
# empty, or the value's rule (module-level: the rule's lambda sees this module's names)
OptionalSipUri = Annotated[str, Rule(lambda v: SIP_URI.check(v) if v else None)]
OptionalUser = Annotated[str, Rule(lambda v: ENDPOINT_NAME.check(v) if v else None)]
# endpoint names the shipped pjsip.conf uses itself (an agent or target may not take them)
RESERVED_ENDPOINTS = ("carrier", "voicebot", "signalling-allow-list", "global")
RESERVED_PREFIX = "botbridge-"
# the pjsip.conf endpoint name of an external target
EXTERNAL_PREFIX = "botbridge-ext-"
MEMBERSHIPS = ("static", "dynamic")

DEFAULT_QUEUE: dict[str, Any] = {}  # every key at its declared default
DEFAULT_QUEUES = {"agents-queue": DEFAULT_QUEUE, "billing-queue": DEFAULT_QUEUE}
# the shipped agent: [sip] agent_contact, in both shipped queues, always a member
DEFAULT_AGENT_NAME = "agent1"


def default_agents(contact: str) -> dict[str, dict[str, Any]]:
    """``[agents]`` when the file has none: ``agent1`` at ``[sip] agent_contact``."""
    return {
        DEFAULT_AGENT_NAME: {
            "contact": contact,
            "membership": "static",
            "queues": {name: 0 for name in DEFAULT_QUEUES},
        }
    }


class QueueSettings(Section, frozen=True):
    """One ``[queues.<name>]``: an app_queue queue (queues.conf)."""

    strategy: Annotated[str, one_of(STRATEGIES)] = "ringall"
    # how long one member rings, and the pause before the members are tried again
    timeout_seconds: Annotated[int, Meta(ge=1, le=600)] = 15
    retry_seconds: Annotated[int, Meta(ge=0, le=600)] = 2
    # after a call a member gets no new one for this long
    wrapup_seconds: Annotated[int, Meta(ge=0, le=3600)] = 0
    music_on_hold: Annotated[str, MOH_CLASS] = ""
    # position and estimated hold time announcements (queues.conf announce-position,
    # announce-holdtime, announce-frequency; 0 = never)
    announce_position: Annotated[str, one_of(("no", "yes", "more", "limit"))] = "no"
    announce_holdtime: Annotated[str, one_of(("no", "yes", "once"))] = "no"
    announce_frequency_seconds: Annotated[int, Meta(ge=0, le=3600)] = 0
    max_waiting: Annotated[int, Meta(ge=0, le=100_000)] = 0  # callers waiting; 0 = no limit
    join_empty: Annotated[str, EMPTY_RULE] = "yes"
    leave_when_empty: Annotated[str, EMPTY_RULE] = "no"
    # ring a member already on a call; None = [bridge] agent_ring_in_use
    ring_in_use: bool | None = None


class AgentSettings(Section, frozen=True):
    """One ``[agents.<name>]``: a static contact or a softphone that registers."""

    contact: OptionalSipUri = ""
    # a registering softphone instead: the file holding its digest secret (state-relative,
    # created with a random secret when absent); its digest username and From user are the
    # agent's name
    password_file: str = ""
    max_contacts: Annotated[int, Meta(ge=1, le=100)] = 1
    # queue -> penalty (lower rings first with strategies that honour it)
    queues: Mapping[QueueName, Penalty] = {}
    # "static": always a member (may pause); "dynamic": logs in and out at run time
    membership: Annotated[str, one_of(MEMBERSHIPS)] = "dynamic"

    def _validate(self) -> None:
        if bool(self.contact) == bool(self.password_file):
            raise invalid("contact", "set either contact or password_file (a softphone)")

    @property
    def registers(self) -> bool:
        return bool(self.password_file)


class ExternalTarget(Section, frozen=True):
    """One ``[external_targets.<name>]``: an existing contact centre behind a SIP trunk."""

    address: Annotated[str, TRUNK_ADDRESS]
    destination: Annotated[str, DESTINATION]
    transport: Annotated[str, one_of(("udp", "tcp", "tls"))] = "udp"
    # outbound digest authentication (empty username: none)
    username: OptionalUser = ""
    password_file: str = ""
    codecs: Codecs = CODECS
    media_encryption: Annotated[str, one_of(("no", "sdes"))] = "no"
    answer_timeout_seconds: Annotated[int, Meta(ge=1, le=600)] = 30

    def _validate(self) -> None:
        if bool(self.username) != bool(self.password_file):
            raise invalid("username", "username and password_file go together")

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]


def check_human_side(
    queues: Mapping[str, QueueSettings],
    agents: Mapping[str, AgentSettings],
    targets: Mapping[str, ExternalTarget],
    routing: Mapping[str, str],
    profiles: Mapping[str, Any],
) -> None:
    """Every queue named anywhere is defined; names do not collide (raise :func:`invalid`)."""
    for name in targets:
        if name in queues:
            raise invalid(f"external_targets.{name}", "a queue has the same name")
    for key, value in routing.items():
        if value not in queues and value not in targets:
            raise invalid(
                f"routing.{key}",
                f"{value!r} is neither a [queues] nor an [external_targets] entry",
            )
    for pname, profile in profiles.items():
        for field in ("fallback_queue", "default_queue", "availability_queue"):
            value = getattr(profile, field)
            if value not in queues:
                _undefined(f"profiles.{pname}.{field}", value)
        # a failed escalation's last resort: a queue or an external target
        overflow = profile.overflow_target
        if overflow and overflow not in queues and overflow not in targets:
            raise invalid(
                f"profiles.{pname}.overflow_target",
                f"{overflow!r} is neither a [queues] nor an [external_targets] entry",
            )
    for name, agent in agents.items():
        if name in RESERVED_ENDPOINTS or name.startswith(RESERVED_PREFIX):
            raise invalid(f"agents.{name}", "this name is reserved for the bridge's endpoints")
        for member_of in agent.queues:
            if member_of not in queues:
                _undefined(f"agents.{name}.queues.{member_of}", member_of)


def answering_agent(channel_name: str) -> str:
    """Who answered, from the agent's channel name: the agent (``PJSIP/alice-0000002a`` ->
    ``alice``), the external target (``PJSIP/botbridge-ext-acme-...`` -> ``acme``), else
    the channel name without its sequence number."""
    base = channel_name.rpartition("-")[0] if "-" in channel_name else channel_name
    endpoint = base.removeprefix("PJSIP/").split("/", 1)[0]
    return endpoint.removeprefix(EXTERNAL_PREFIX)


def _undefined(key: str, queue: str) -> None:
    raise invalid(key, f"queue {queue!r} is not defined: add [queues.{queue}]")
