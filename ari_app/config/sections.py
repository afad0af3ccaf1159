"""The call-handling sections: ``[ari]``, ``[sip]``, ``[bridge]``, ``[limits]``, ``[store]``,
``[billing]``, ``[logging]``, ``[webhooks]`` and ``[bye_context]``.

Each field is the setting's one declaration: its type, limits and default (ari_app/defaults.toml
shows the same defaults with their explanations; a unit test keeps the two equal).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from msgspec import Meta

from ari_app.config.credentials import mask_url
from ari_app.config.values import (
    CIDR_LIST,
    CODECS,
    CONTEXT_NAME,
    ENDPOINT_NAME,
    HTTP_URL,
    IP_ADDRESS,
    SIP_URI,
    Codecs,
    Port,
    Rule,
    Section,
    invalid,
    matches,
    one_of,
)
from ari_app.outcomes import OUTCOMES
from ari_app.records.billing import DEFAULT_ROUNDING, ROUNDINGS

RtpPort = Annotated[int, Meta(ge=1024, le=65535)]
Encryption = Annotated[str, one_of(("no", "sdes"))]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONSULT_USER_NAME = matches(r"[A-Za-z0-9._-]{0,64}", "must be [A-Za-z0-9._-]")
LOG_FORMATS = ("text", "json")
# Asterisk's HTTP server listens with a backlog of 10 (main/tcptls.c, not configurable): more
# REST connections opened at once than that overflow it, and the kernel drops their SYNs (the
# client retries after 1 s, then 3 s: requests of a load burst stalled 3 to 6 s)
ASTERISK_HTTP_LISTEN_BACKLOG = 10


class AriSettings(Section, frozen=True):
    """``[ari]``: the Asterisk REST interface the app connects to."""

    # http(s)://host:port/ari; a trailing '/' is dropped at load
    url: Annotated[str, HTTP_URL] = "http://127.0.0.1:8088/ari"
    app: Annotated[str, ENDPOINT_NAME] = "botbridge"  # the Stasis application name
    username: Annotated[str, ENDPOINT_NAME] = "botbridge"
    password_file: str = "ari-password"  # state-relative
    # HTTPS ARI: the pair Asterisk presents (empty: the SIP TLS pair), the CA the app trusts
    tls_cert_file: str = ""
    tls_key_file: str = ""
    ca_file: str = ""


class SipSettings(Section, frozen=True):
    """``[sip]``: transports, peers' address matches, RTP ports, TLS and media encryption."""

    host: Annotated[str, IP_ADDRESS] = "127.0.0.1"
    port: Port = 5060
    tls_port: Port = 5061
    carrier_match: Annotated[str, CIDR_LIST] = "127.0.0.1"
    bot_match: Annotated[str, CIDR_LIST] = "127.0.0.1"
    agent_match: Annotated[str, CIDR_LIST] = "127.0.0.1"
    agent_contact: Annotated[str, SIP_URI] = "sip:agent1@127.0.0.1:5090"
    rtp_start: RtpPort = 10000
    rtp_end: RtpPort = 10999
    tls_cert_file: str = "tls/server.crt"
    tls_key_file: str = "tls/server.key"
    # CA that outgoing TLS peers (the bot) must chain to; verified when tls_verify_server
    tls_ca_file: str = ""
    tls_verify_server: bool = False
    carrier_media_encryption: Encryption = "no"
    carrier_media_encryption_optimistic: bool = False
    bot_media_encryption: Encryption = "no"
    bot_media_encryption_optimistic: bool = False
    # codecs offered/accepted on the carrier trunk and to agents, in order of preference
    carrier_codecs: Codecs = CODECS
    agent_codecs: Codecs = CODECS

    def _validate(self) -> None:
        if self.rtp_end <= self.rtp_start:
            raise invalid("rtp_end", "rtp_end must be above rtp_start")


class BridgeSettings(Section, frozen=True):
    """``[bridge]``: transfer, queue and capacity settings of the call handling."""

    max_context_bytes: Annotated[int, Meta(ge=1, le=256)] = 256
    # one header value copied from the caller's INVITE to the bot's (profile carrier_headers),
    # in bytes: a longer value is not copied (logged, header_too_large)
    max_header_bytes: Annotated[int, Meta(ge=16, le=1024)] = 256
    transfer_hold_seconds: Annotated[int, Meta(ge=1, le=300)] = 20
    queue_timeout_seconds: Annotated[int, Meta(ge=1, le=86400)] = 300
    max_calls: Annotated[int, Meta(ge=1, le=100000)] = 3000
    availability_variable: Annotated[str, ENDPOINT_NAME] = "BOTBRIDGE_AGENT_AVAILABILITY"
    queue_context: Annotated[str, CONTEXT_NAME] = "botbridge-queue"
    availability_cache_seconds: Annotated[float, Meta(ge=0, le=60)] = 2.0
    agent_ring_in_use: bool = False
    drain_seconds: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    # music on hold (musiconhold.conf class) while a caller waits for a new bot dialog
    hold_music_class: Annotated[str, ENDPOINT_NAME] = "botbridge"
    # the Request-URI user of a bot's consult call (warm transfer, profile warm_transfer)
    consult_user: Annotated[str, ENDPOINT_NAME] = "consult"
    # digest authentication of the bots' consult calls: the user name they must answer a
    # 401 with (empty: none) and the file holding its password (state-relative, made with a
    # random password when absent; hand it to the bot)
    consult_auth_username: Annotated[str, CONSULT_USER_NAME] = ""
    consult_password_file: str = "consult-password"


class Limits(Section, frozen=True):
    """``[limits]``: overload protection and the ARI connection pool (docs/performance.md)."""

    max_active_calls: Annotated[int, Meta(ge=1, le=100000)] = 1000
    max_new_calls_per_second: Annotated[float, Meta(ge=0.1, le=10000)] = 200.0
    max_pending_events: Annotated[int, Meta(ge=10, le=10**7)] = 5000
    overload_action: Annotated[str, one_of(("fallback_queue", "refuse"))] = "fallback_queue"
    # at most Asterisk's HTTP listen backlog: connections opened together beyond it are dropped
    ari_connections: Annotated[int, Meta(ge=1, le=ASTERISK_HTTP_LISTEN_BACKLOG)] = 8


DEFAULT_LIMITS = Limits()


class StoreSettings(Section, frozen=True):
    """``[store]``. Once loaded, ``path`` is absolute, ``url`` is the database URL (the
    SQLite file at ``path`` when none is configured) and ``node`` is never empty."""

    path: str = "interactions.sqlite3"  # state-relative as written
    url: str = ""  # may hold a password: shown only through mask_url
    node: str = ""
    flush_interval_seconds: Annotated[float, Meta(ge=0.01, le=5)] = 0.2
    # the record writer's local journal while the database cannot be written (relative to
    # the state directory), its size limit, and the file of changes set aside as unwritable
    journal_path: str = "record-journal.jsonl"
    journal_max_bytes: Annotated[int, Meta(ge=64 * 1024, le=64 * 1024**3)] = 64 * 1024 * 1024
    dead_letter_path: str = "record-dead-letters.jsonl"
    # /readyz is not ready once a record change has waited this long unwritten
    unwritable_after_seconds: Annotated[float, Meta(ge=1, le=3600)] = 30.0
    # days kept: records (by end); delivered/given-up webhook events and report claims;
    # 0 = kept forever
    retention_days: Annotated[int, Meta(ge=0, le=36500)] = 400
    outbox_retention_days: Annotated[int, Meta(ge=0, le=36500)] = 30

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={mask_url(self.url) if name == 'url' else getattr(self, name)!r}"
            for name in self.__struct_fields__
        )
        return f"StoreSettings({fields})"


class LoggingSettings(Section, frozen=True):
    """``[logging]``: the app's log level and format (docs/operations.md, "Logs")."""

    level: Annotated[str, one_of(LOG_LEVELS)] = "INFO"
    # "text" (one line per record) or "json" (one object per line)
    format: Annotated[str, one_of(LOG_FORMATS)] = "text"


class BillingSettings(Section, frozen=True):
    """``[billing]``: how bot seconds become billable minutes (ari_app/records/billing.py)."""

    rounding: Annotated[str, one_of(ROUNDINGS)] = DEFAULT_ROUNDING


class WebhookSettings(Section, frozen=True):
    """``[webhooks]``: interaction events POSTed from the durable outbox (docs/webhooks.md)."""

    urls: tuple[Annotated[str, HTTP_URL], ...] = ()  # may hold credentials: see __repr__
    outcomes: Annotated[tuple[Annotated[str, one_of(OUTCOMES)], ...], Meta(min_length=1)] = (
        "escalated",
        "escalation_failed",
    )
    secret_file: str = "webhook-secret"  # state-relative; BOTBRIDGE_WEBHOOK_SECRET wins
    timeout_seconds: Annotated[float, Meta(ge=0.1, le=60)] = 5.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 12
    backoff_initial_seconds: Annotated[float, Meta(ge=0.01, le=3600)] = 1.0
    backoff_max_seconds: Annotated[float, Meta(ge=0.01, le=86400)] = 300.0
    poll_interval_seconds: Annotated[float, Meta(ge=0.01, le=60)] = 1.0
    batch_size: Annotated[int, Meta(ge=1, le=1000)] = 50

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def _validate(self) -> None:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise invalid("backoff_max_seconds", "must be at least backoff_initial_seconds")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__struct_fields__[1:])
        return f"WebhookSettings(urls={tuple(mask_url(u) for u in self.urls)!r}, {shown})"


def _loopback(value: str) -> str | None:
    try:
        if ipaddress.ip_address(value).is_loopback:
            return None
    except ValueError:
        return "Not a valid IP address."
    return "must be a loopback address: HEP copies every SIP message"


class ByeContextSettings(Section, frozen=True):
    """``[bye_context]``: the bot's context on its BYE, from Asterisk's HEP capture (optional;
    docs/decisions.md (o))."""

    enabled: bool = False
    capture_host: Annotated[str, Rule(_loopback)] = "127.0.0.1"  # loopback only
    capture_port: Port = 9061
    # HEP packets from elsewhere are dropped; the TOML value is one comma-separated string
    sources: tuple[Annotated[str, CIDR_LIST], ...] = ("127.0.0.1",)
    password_file: str = "hep-password"  # state-relative; created when absent
    wait_seconds: Annotated[float, Meta(ge=0, le=5)] = 0.2
    ttl_seconds: Annotated[float, Meta(ge=1, le=3600)] = 30.0
    # bot dialogs followed at most, each with at most one BYE copy
    max_entries: Annotated[int, Meta(ge=10, le=10**7)] = 10000
    # a longer Call-ID is no dialog of Asterisk's: dropped
    max_call_id_bytes: Annotated[int, Meta(ge=36, le=1024)] = 128
