"""Configuration: built-in defaults, an optional TOML file, then environment variables.

Validated once at start-up with marshmallow; an error names the bad key and the fix. Each
section loads into a frozen dataclass with typed attributes (``config.sip.port``), and each
``[[routes]]`` pattern is compiled then, so a malformed one stops the start, not a call.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates,
    validates_schema,
)

from ari_app.config import reporting as reporting_config
from ari_app.config.edge import EdgeSchema, EdgeSettings
from ari_app.config.reporting import (
    HttpSettings,
    ReportSchedule,
    ReportsSettings,
    SmtpSettings,
)
from ari_app.outcomes import OUTCOMES

__all__ = [
    "BOT_HEALTH_PREFIX",
    "CODECS",
    "DEFAULT_LIMITS",
    "DTMF_MODES",
    "ENV_OVERRIDES",
    "AriSettings",
    "BillingSettings",
    "BotHealthSettings",
    "BotProfile",
    "BotTarget",
    "BridgeSettings",
    "ByeContextSettings",
    "Config",
    "ConfigError",
    "EdgeSettings",
    "HttpSettings",
    "Limits",
    "LoggingSettings",
    "ReportSchedule",
    "ReportsSettings",
    "Route",
    "SipSettings",
    "SmtpSettings",
    "StoreSettings",
    "WebhookSettings",
    "client_ssl_context",
    "compile_pattern",
    "default_node",
    "ensure_password_file",
    "ensure_secret_file",
    "hep_password",
    "load_config",
    "match_pattern",
]

_QUEUE_NAME = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="must be [A-Za-z0-9_-], 1-64 chars")
_ENDPOINT_NAME = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="must be [A-Za-z0-9_-]")
_HEADER_NAME = validate.Regexp(r"^[A-Za-z0-9-]{1,64}$", error="must be a SIP header name")
_HEADER_VALUE = validate.Regexp(r"^[A-Za-z0-9 _.:@+/=;-]{0,256}$", error="unsafe characters")
_SIP_URI = validate.Regexp(
    r"^sips?:[A-Za-z0-9_.+-]+@[A-Za-z0-9_.:\[\]-]+(;[A-Za-z0-9=_.-]+)*$",
    error="must be sip:user@host[:port]",
)
_CONTEXT_NAME = validate.Regexp(r"^[A-Za-z0-9_-]{0,64}$", error="must be a dialplan context name")
_PATTERN = validate.Regexp(
    r"^(_[0-9A-Za-z+*#NXZ.!\[\]-]+|[0-9A-Za-z+*#]+)$",
    error="must be an exact number or an Asterisk pattern like _X.",
)
_ENCRYPTION = validate.OneOf(["no", "sdes"])
_CIDR_LIST = validate.Regexp(r"^[0-9a-fA-F.:/, ]+$", error="must be addresses or CIDRs")
# codecs the shipped modules.conf loads (docs/media.md); the order of a list is the preference
CODECS = ("g722", "ulaw", "alaw")
# how DTMF travels on a bot endpoint (pjsip.conf dtmf_mode); docs/media.md
DTMF_MODES = ("rfc4733", "info", "auto", "auto_info")


def _codec_list() -> fields.List[Any]:
    return fields.List(
        fields.Str(validate=validate.OneOf(CODECS)),
        validate=[validate.Length(min=1), _unique],
        load_default=lambda: list(CODECS),
    )


def _unique(values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("each codec once")


# scalar settings that an environment variable may override: env name -> (section, key)
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "BOTBRIDGE_ARI_URL": ("ari", "url"),
    "BOTBRIDGE_ARI_APP": ("ari", "app"),
    "BOTBRIDGE_ARI_USERNAME": ("ari", "username"),
    "BOTBRIDGE_ARI_PASSWORD_FILE": ("ari", "password_file"),
    "BOTBRIDGE_SIP_HOST": ("sip", "host"),
    "BOTBRIDGE_SIP_PORT": ("sip", "port"),
    "BOTBRIDGE_SIP_TLS_PORT": ("sip", "tls_port"),
    "BOTBRIDGE_CARRIER_MATCH": ("sip", "carrier_match"),
    "BOTBRIDGE_BOT_MATCH": ("sip", "bot_match"),
    "BOTBRIDGE_AGENT_MATCH": ("sip", "agent_match"),
    "BOTBRIDGE_AGENT_CONTACT": ("sip", "agent_contact"),
    "BOTBRIDGE_RTP_START": ("sip", "rtp_start"),
    "BOTBRIDGE_RTP_END": ("sip", "rtp_end"),
    "BOTBRIDGE_MAX_CONTEXT_BYTES": ("bridge", "max_context_bytes"),
    "BOTBRIDGE_STORE_PATH": ("store", "path"),
    "BOTBRIDGE_DATABASE_URL": ("store", "url"),
    "BOTBRIDGE_STORE_NODE": ("store", "node"),
    "BOTBRIDGE_BILLING_ROUNDING": ("billing", "rounding"),
    "BOTBRIDGE_MAX_ACTIVE_CALLS": ("limits", "max_active_calls"),
    "BOTBRIDGE_DRAIN_SECONDS": ("bridge", "drain_seconds"),
    "BOTBRIDGE_MAX_CALLS_PER_SECOND": ("limits", "max_new_calls_per_second"),
    "BOTBRIDGE_MAX_PENDING_EVENTS": ("limits", "max_pending_events"),
    "BOTBRIDGE_OVERLOAD_ACTION": ("limits", "overload_action"),
    "BOTBRIDGE_BOT_URI": ("profiles.default", "bot_uri"),
    "BOTBRIDGE_BOT_ANSWER_TIMEOUT": ("profiles.default", "answer_timeout_seconds"),
    "BOTBRIDGE_HTTP_ENABLED": ("http", "enabled"),
    "BOTBRIDGE_HTTP_HOST": ("http", "host"),
    "BOTBRIDGE_HTTP_PORT": ("http", "port"),
    "BOTBRIDGE_HTTP_TOKEN_FILE": ("http", "token_file"),
    "BOTBRIDGE_SMTP_HOST": ("smtp", "host"),
    "BOTBRIDGE_SMTP_PORT": ("smtp", "port"),
    "BOTBRIDGE_SMTP_USERNAME": ("smtp", "username"),
    "BOTBRIDGE_SMTP_PASSWORD_FILE": ("smtp", "password_file"),
    "BOTBRIDGE_REPORTS_TIMEZONE": ("reports", "timezone"),
    "BOTBRIDGE_WEBHOOK_SECRET_FILE": ("webhooks", "secret_file"),
    "BOTBRIDGE_LOG_LEVEL": ("logging", "level"),
    "BOTBRIDGE_LOG_FORMAT": ("logging", "format"),
}


class ConfigError(ValueError):
    """Configuration is invalid; the message names the key and what to change."""


class _AriSchema(Schema):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    app = fields.Str(required=True, validate=_ENDPOINT_NAME)
    username = fields.Str(required=True, validate=_ENDPOINT_NAME)
    password_file = fields.Str(required=True)
    # HTTPS ARI (an https:// url): the pair Asterisk presents (empty = the SIP TLS pair) and
    # the CA the app trusts for it (empty = the system's trust store)
    tls_cert_file = fields.Str(load_default="")
    tls_key_file = fields.Str(load_default="")
    ca_file = fields.Str(load_default="")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> AriSettings:
        return AriSettings(**data)


class _SipSchema(Schema):
    host = fields.IP(required=True)
    port = fields.Int(required=True, validate=validate.Range(1, 65535))
    tls_port = fields.Int(required=True, validate=validate.Range(1, 65535))
    carrier_match = fields.Str(required=True, validate=validate.Regexp(r"^[0-9a-fA-F.:/, ]+$"))
    bot_match = fields.Str(required=True, validate=_CIDR_LIST)
    agent_match = fields.Str(required=True, validate=_CIDR_LIST)
    agent_contact = fields.Str(required=True, validate=_SIP_URI)
    rtp_start = fields.Int(required=True, validate=validate.Range(1024, 65535))
    rtp_end = fields.Int(required=True, validate=validate.Range(1024, 65535))
    tls_cert_file = fields.Str(required=True)
    tls_key_file = fields.Str(required=True)
    # CA that outgoing TLS peers (the bot) must chain to; verified when tls_verify_server
    tls_ca_file = fields.Str(load_default="")
    tls_verify_server = fields.Bool(load_default=False)
    carrier_media_encryption = fields.Str(required=True, validate=_ENCRYPTION)
    carrier_media_encryption_optimistic = fields.Bool(required=True)
    bot_media_encryption = fields.Str(required=True, validate=_ENCRYPTION)
    bot_media_encryption_optimistic = fields.Bool(required=True)
    # codecs offered/accepted on the carrier trunk and to agents, in order of preference
    carrier_codecs = _codec_list()
    agent_codecs = _codec_list()

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> SipSettings:
        return SipSettings(
            **{
                **data,
                "carrier_codecs": tuple(data["carrier_codecs"]),
                "agent_codecs": tuple(data["agent_codecs"]),
            }
        )


class _BridgeSchema(Schema):
    max_context_bytes = fields.Int(required=True, validate=validate.Range(1, 256))
    transfer_hold_seconds = fields.Int(required=True, validate=validate.Range(1, 300))
    queue_timeout_seconds = fields.Int(required=True, validate=validate.Range(1, 86400))
    max_calls = fields.Int(required=True, validate=validate.Range(1, 100000))
    availability_variable = fields.Str(required=True, validate=_ENDPOINT_NAME)
    queue_context = fields.Str(required=True, validate=_CONTEXT_NAME)
    availability_cache_seconds = fields.Float(load_default=2.0, validate=validate.Range(0, 60))
    agent_ring_in_use = fields.Bool(load_default=False)
    drain_seconds = fields.Float(load_default=30.0, validate=validate.Range(0, 3600))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> BridgeSettings:
        return BridgeSettings(**data)


# Asterisk's HTTP server listens with a backlog of 10 (main/tcptls.c, not configurable): more
# REST connections opened at once than that overflow it, and the kernel drops their SYNs (the
# client retries after 1 s, then 3 s: requests of a load burst stalled 3 to 6 s)
ASTERISK_HTTP_LISTEN_BACKLOG = 10


class _LimitsSchema(Schema):
    max_active_calls = fields.Int(required=True, validate=validate.Range(1, 100000))
    max_new_calls_per_second = fields.Float(required=True, validate=validate.Range(0.1, 10000))
    max_pending_events = fields.Int(required=True, validate=validate.Range(10, 10**7))
    overload_action = fields.Str(
        required=True, validate=validate.OneOf(["fallback_queue", "refuse"])
    )
    # at most Asterisk's HTTP listen backlog: connections opened together beyond it are dropped
    ari_connections = fields.Int(
        required=True, validate=validate.Range(1, ASTERISK_HTTP_LISTEN_BACKLOG)
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Limits:
        return Limits(**data)


class _StoreSchema(Schema):
    path = fields.Str(load_default="interactions.sqlite3")
    url = fields.Str(load_default="")
    node = fields.Str(load_default="")
    flush_interval_seconds = fields.Float(load_default=0.2, validate=validate.Range(0.01, 5))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> StoreSettings:
        return StoreSettings(**data)


class _BotSchema(Schema):
    """One ``[[profiles.<name>.bots]]`` entry (docs/configuration.md, "Several bots")."""

    uri = fields.Str(required=True, validate=_SIP_URI)
    # share of first attempts (weighted random among the eligible bots with a weight);
    # 0 = only tried after the first pick, in list order
    weight = fields.Int(load_default=0, validate=validate.Range(0, 1_000_000))
    # 0 = no limit
    max_concurrent_calls = fields.Int(load_default=0, validate=validate.Range(0, 100_000))
    max_calls_per_second = fields.Float(load_default=0.0, validate=validate.Range(0, 10_000))
    # SIP OPTIONS probe period; absent = [bot_health] qualify_frequency_seconds, 0 = off
    qualify_frequency_seconds = fields.Int(
        load_default=None, allow_none=True, validate=validate.Range(0, 86400)
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> BotTarget:
        return BotTarget(**data)


class _BotHealthSchema(Schema):
    qualify_frequency_seconds = fields.Int(load_default=0, validate=validate.Range(0, 86400))
    qualify_timeout_seconds = fields.Float(load_default=3.0, validate=validate.Range(0.1, 60))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> BotHealthSettings:
        return BotHealthSettings(**data)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class _LoggingSchema(Schema):
    level = fields.Str(
        load_default="INFO",
        validate=validate.OneOf(LOG_LEVELS, error="must be one of {choices}"),
    )
    format = fields.Str(
        load_default="text",
        validate=validate.OneOf(LOG_FORMATS, error="must be one of {choices}"),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> LoggingSettings:
        return LoggingSettings(**data)


class _ProfileSchema(Schema):
    bot_endpoint = fields.Str(required=True, validate=_ENDPOINT_NAME)
    bot_uri = fields.Str(load_default="", validate=validate.Regexp(r"^$|^sips?:.+"))
    # several bots, tried in order (bot_uri is the one-item form); bots wins over bot_uris,
    # which wins over bot_uri
    bot_uris = fields.List(fields.Str(validate=_SIP_URI), load_default=list)
    bots = fields.List(fields.Nested(_BotSchema), load_default=list)
    # with another bot left to try, one attempt may ring for at most this long (the whole
    # sequence stays within answer_timeout_seconds)
    attempt_timeout_seconds = fields.Int(load_default=6, validate=validate.Range(1, 300))
    answer_timeout_seconds = fields.Int(required=True, validate=validate.Range(1, 300))
    interaction_header = fields.Str(load_default="X-Interaction-Id", validate=_HEADER_NAME)
    extra_headers = fields.Dict(
        keys=fields.Str(validate=_HEADER_NAME),
        values=fields.Str(validate=_HEADER_VALUE),
        load_default=dict,
    )
    fallback_queue = fields.Str(required=True, validate=_QUEUE_NAME)
    default_queue = fields.Str(required=True, validate=_QUEUE_NAME)
    availability_queue = fields.Str(required=True, validate=_QUEUE_NAME)
    post_bot_context = fields.Str(load_default="", validate=_CONTEXT_NAME)
    uui_discriminator = fields.Bool(load_default=False)
    # media towards the bot (docs/media.md): codecs in order of preference, DTMF mode
    codecs = _codec_list()
    dtmf_mode = fields.Str(load_default="rfc4733", validate=validate.OneOf(DTMF_MODES))
    # business_hours "closed" (no agent logged in, or the dialplan says so): decline the bot's
    # REFER (NOTIFY 404) so that the bot keeps the caller
    decline_transfer_when_closed = fields.Bool(load_default=False)

    @validates_schema
    def _uri(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("bot_uri"):
            try:
                _SIP_URI(data["bot_uri"])
            except ValidationError as exc:
                raise ValidationError(exc.messages, "bot_uri") from exc


class _WebhooksSchema(Schema):
    # where interaction events are POSTed (empty: no webhooks); docs/webhooks.md
    urls = fields.List(fields.Url(schemes={"http", "https"}, require_tld=False), load_default=list)
    # which outcomes make an event: ["escalated"] or any of the record outcomes
    outcomes = fields.List(
        fields.Str(validate=validate.OneOf(OUTCOMES)),
        load_default=lambda: ["escalated"],
        validate=validate.Length(min=1),
    )
    secret_file = fields.Str(load_default="webhook-secret")
    timeout_seconds = fields.Float(load_default=5.0, validate=validate.Range(0.1, 60))
    max_attempts = fields.Int(load_default=12, validate=validate.Range(1, 1000))
    backoff_initial_seconds = fields.Float(load_default=1.0, validate=validate.Range(0.01, 3600))
    backoff_max_seconds = fields.Float(load_default=300.0, validate=validate.Range(0.01, 86400))
    poll_interval_seconds = fields.Float(load_default=1.0, validate=validate.Range(0.01, 60))
    batch_size = fields.Int(load_default=50, validate=validate.Range(1, 1000))

    @validates_schema
    def _backoff(self, data: dict[str, Any], **_: Any) -> None:
        if data["backoff_max_seconds"] < data["backoff_initial_seconds"]:
            raise ValidationError("must be at least backoff_initial_seconds", "backoff_max_seconds")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> WebhookSettings:
        return WebhookSettings(
            **{**data, "urls": tuple(data["urls"]), "outcomes": tuple(data["outcomes"])}
        )


class _ByeContextSchema(Schema):
    # context on the bot's BYE, read from Asterisk's HEP copy of it (docs/decisions.md (o))
    enabled = fields.Bool(load_default=False)
    capture_host = fields.IP(load_default="127.0.0.1")
    capture_port = fields.Int(load_default=9061, validate=validate.Range(1, 65535))
    sources = fields.Str(load_default="127.0.0.1", validate=_CIDR_LIST)
    password_file = fields.Str(load_default="hep-password")
    wait_seconds = fields.Float(load_default=0.2, validate=validate.Range(0, 5))
    ttl_seconds = fields.Float(load_default=30.0, validate=validate.Range(1, 3600))
    max_entries = fields.Int(load_default=10000, validate=validate.Range(10, 10**7))
    max_call_id_bytes = fields.Int(load_default=128, validate=validate.Range(36, 1024))

    @validates("capture_host")
    def _loopback(self, value: IPv4Address | IPv6Address, **_: Any) -> None:
        if not value.is_loopback:
            raise ValidationError("must be a loopback address: HEP copies every SIP message")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ByeContextSettings:
        sources = tuple(a.strip() for a in data.pop("sources").split(",") if a.strip())
        return ByeContextSettings(
            **{**data, "capture_host": str(data["capture_host"])}, sources=sources
        )


class _BillingSchema(Schema):
    # how bot seconds become billable minutes (ari_app/calls/billing.py, docs/records.md)
    rounding = fields.Str(
        load_default="ceil_minute", validate=validate.OneOf(["ceil_minute", "ceil_6s", "exact"])
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> BillingSettings:
        return BillingSettings(**data)


class _RouteSchema(Schema):
    pattern = fields.Str(required=True, validate=_PATTERN)
    profile = fields.Str(required=True)

    @validates("pattern")
    def _compiles(self, value: str, **_: Any) -> None:
        try:
            compile_pattern(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Route:
        return Route(**data)


class _ConfigSchema(Schema):
    ari = fields.Nested(_AriSchema, required=True)
    sip = fields.Nested(_SipSchema, required=True)
    bridge = fields.Nested(_BridgeSchema, required=True)
    store = fields.Nested(_StoreSchema, required=True)
    limits = fields.Nested(_LimitsSchema, required=True)
    billing = fields.Nested(_BillingSchema, load_default=lambda: BillingSettings())
    bot_health = fields.Nested(_BotHealthSchema, load_default=lambda: BotHealthSettings())
    webhooks = fields.Nested(_WebhooksSchema, load_default=lambda: WebhookSettings())
    bye_context = fields.Nested(_ByeContextSchema, load_default=lambda: ByeContextSettings())
    logging = fields.Nested(_LoggingSchema, load_default=lambda: LoggingSettings())
    routing = fields.Dict(
        keys=fields.Str(validate=validate.Length(1, 64)),
        values=fields.Str(validate=_QUEUE_NAME),
        required=True,
    )
    profiles = fields.Dict(
        keys=fields.Str(validate=_ENDPOINT_NAME),
        values=fields.Nested(_ProfileSchema),
        required=True,
    )
    routes = fields.List(fields.Nested(_RouteSchema), load_default=list)
    reports = fields.Nested(reporting_config.ReportsSchema, required=True)
    http = fields.Nested(reporting_config.HttpSchema, required=True)
    smtp = fields.Nested(reporting_config.SmtpSchema, required=True)
    report_schedules = fields.List(
        fields.Nested(reporting_config.ReportScheduleSchema), load_default=list
    )
    edge = fields.Nested(EdgeSchema, required=True)

    @validates_schema
    def _report_schedules(self, data: dict[str, Any], **_: Any) -> None:
        reporting_config.check_schedules(data)

    @validates_schema
    def _references(self, data: dict[str, Any], **_: Any) -> None:
        profiles = data.get("profiles", {})
        if "default" not in profiles:
            raise ValidationError("a profile named 'default' is required", "profiles")
        for route in data.get("routes", []):
            if route.profile not in profiles:
                raise ValidationError(
                    f"route {route.pattern!r} names unknown profile {route.profile!r}",
                    "routes",
                )
        sip = data["sip"]
        if sip.rtp_end <= sip.rtp_start:
            raise ValidationError("rtp_end must be above rtp_start", "sip")
        # codecs and dtmf_mode are settings of the bot's PJSIP endpoint: profiles sharing one
        # endpoint must agree, or one of them would silently get the other's media
        media: dict[str, tuple[str, tuple[str, ...], str]] = {}
        for name, profile in sorted(profiles.items(), key=lambda item: item[0] != "default"):
            mine = (name, tuple(profile["codecs"]), profile["dtmf_mode"])
            first = media.setdefault(profile["bot_endpoint"], mine)
            if first[1:] != mine[1:]:
                raise ValidationError(
                    f"profiles {first[0]!r} and {name!r} share bot_endpoint "
                    f"{profile['bot_endpoint']!r} but differ in codecs or dtmf_mode; "
                    "give them the same values or separate endpoints",
                    "profiles",
                )


@dataclass(frozen=True)
class AriSettings:
    """``[ari]``: the Asterisk REST interface the app connects to."""

    url: str  # http(s)://host:port
    app: str  # the Stasis application name
    username: str
    password_file: str  # state-relative
    # HTTPS ARI: the pair Asterisk presents (empty: the SIP TLS pair), the CA the app trusts
    tls_cert_file: str = ""
    tls_key_file: str = ""
    ca_file: str = ""


@dataclass(frozen=True)
class SipSettings:
    """``[sip]``: transports, peers' address matches, RTP ports, TLS and media encryption."""

    host: IPv4Address | IPv6Address
    port: int
    tls_port: int
    carrier_match: str
    bot_match: str
    agent_match: str
    agent_contact: str
    rtp_start: int
    rtp_end: int
    tls_cert_file: str
    tls_key_file: str
    carrier_media_encryption: str  # "no" or "sdes"
    carrier_media_encryption_optimistic: bool
    bot_media_encryption: str
    bot_media_encryption_optimistic: bool
    tls_ca_file: str = ""
    tls_verify_server: bool = False
    carrier_codecs: tuple[str, ...] = CODECS
    agent_codecs: tuple[str, ...] = CODECS


@dataclass(frozen=True)
class BridgeSettings:
    """``[bridge]``: transfer, queue and capacity settings of the call handling."""

    max_context_bytes: int
    transfer_hold_seconds: int
    queue_timeout_seconds: int
    max_calls: int
    availability_variable: str
    queue_context: str
    availability_cache_seconds: float = 2.0
    agent_ring_in_use: bool = False
    drain_seconds: float = 30.0


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``, as written (``Config`` holds the resolved path, URL and node)."""

    path: str = "interactions.sqlite3"
    url: str = ""
    node: str = ""
    flush_interval_seconds: float = 0.2


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``: the app's log level and format (docs/operations.md, "Logs")."""

    level: str = "INFO"  # one of LOG_LEVELS
    format: str = "text"  # "text" (one line per record) or "json" (one object per line)


@dataclass(frozen=True)
class BillingSettings:
    """``[billing]``: how bot seconds become billable minutes (ari_app/calls/billing.py)."""

    rounding: str = "ceil_minute"  # "ceil_minute", "ceil_6s" or "exact"


@dataclass(frozen=True)
class WebhookSettings:
    """``[webhooks]``: interaction events POSTed from the durable outbox (docs/webhooks.md)."""

    urls: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ("escalated",)
    secret_file: str = "webhook-secret"  # state-relative; BOTBRIDGE_WEBHOOK_SECRET wins
    timeout_seconds: float = 5.0
    max_attempts: int = 12
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    poll_interval_seconds: float = 1.0
    batch_size: int = 50

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


@dataclass(frozen=True)
class ByeContextSettings:
    """``[bye_context]``: the bot's context on its BYE, from Asterisk's HEP capture (optional)."""

    enabled: bool = False
    capture_host: str = "127.0.0.1"  # loopback only
    capture_port: int = 9061
    sources: tuple[str, ...] = ("127.0.0.1",)  # HEP packets from elsewhere are dropped
    password_file: str = "hep-password"  # state-relative; created when absent
    wait_seconds: float = 0.2
    ttl_seconds: float = 30.0
    max_entries: int = 10000  # bot dialogs followed at most, each with at most one BYE copy
    max_call_id_bytes: int = 128  # a longer Call-ID is no dialog of Asterisk's: dropped


@dataclass(frozen=True)
class Limits:
    """``[limits]``: overload protection and the ARI connection pool (docs/performance.md)."""

    max_active_calls: int
    max_new_calls_per_second: float
    max_pending_events: int
    overload_action: str  # "fallback_queue" or "refuse"
    ari_connections: int


DEFAULT_LIMITS = Limits(
    max_active_calls=1000,
    max_new_calls_per_second=200.0,
    max_pending_events=5000,
    overload_action="fallback_queue",
    ari_connections=8,
)


# name prefix of the endpoint and AOR rendered per probed bot URI (pjsip.conf)
BOT_HEALTH_PREFIX = "botbridge-bot-"


@dataclass(frozen=True)
class BotHealthSettings:
    """``[bot_health]``: SIP OPTIONS probes of the bot URIs (Asterisk qualify)."""

    qualify_frequency_seconds: int = 0  # 0 = not probed (every bot counts as reachable)
    qualify_timeout_seconds: float = 3.0


@dataclass(frozen=True)
class BotTarget:
    """One bot URI of a profile, with its share of first attempts and its limits."""

    uri: str  # empty: the bot endpoint's own AOR contact (a profile without bot_uri)
    weight: int = 0
    max_concurrent_calls: int = 0  # 0 = no limit
    max_calls_per_second: float = 0.0  # 0 = no limit
    qualify_frequency_seconds: int | None = None  # None = [bot_health]


@dataclass(frozen=True)
class BotProfile:
    name: str
    bot_endpoint: str
    bot_uri: str
    answer_timeout_seconds: int
    interaction_header: str
    extra_headers: Mapping[str, str]
    fallback_queue: str
    default_queue: str
    availability_queue: str
    post_bot_context: str
    uui_discriminator: bool
    # the bots in order (bot_uris / [[bots]]; one entry for bot_uri): never empty once loaded
    bots: tuple[BotTarget, ...] = ()
    attempt_timeout_seconds: int = 6
    codecs: tuple[str, ...] = CODECS
    dtmf_mode: str = "rfc4733"
    decline_transfer_when_closed: bool = False

    @property
    def dial_string(self) -> str:
        """PJSIP dial string of the first bot, built only from configuration."""
        return self.dial_string_for(self.bot_uri)

    def dial_string_for(self, uri: str) -> str:
        """PJSIP dial string of one of the profile's bot URIs (configuration, never call data)."""
        if uri:
            return f"PJSIP/{self.bot_endpoint}/{uri}"
        return f"PJSIP/{self.bot_endpoint}"

    @property
    def targets(self) -> tuple[BotTarget, ...]:
        return self.bots or (BotTarget(self.bot_uri),)


def _profile(name: str, data: Mapping[str, Any]) -> BotProfile:
    """A profile with its bot list resolved: ``bots``, else ``bot_uris``, else ``bot_uri``."""
    values = dict(data)
    bots: list[BotTarget] = list(values.pop("bots", ()))
    uris: list[str] = list(values.pop("bot_uris", ()))
    if not bots:
        bots = [BotTarget(uri) for uri in uris] or [BotTarget(values.get("bot_uri", ""))]
    if len({b.uri for b in bots}) != len(bots):
        raise ConfigError(f"invalid configuration: profiles.{name}.bots: a bot URI is listed twice")
    values["bot_uri"] = bots[0].uri
    if "codecs" in values:
        values["codecs"] = tuple(values["codecs"])
    return BotProfile(name=name, bots=tuple(bots), **values)


@dataclass(frozen=True)
class Route:
    """One ``[[routes]]`` entry; ``regex`` is its pattern, compiled when the route is made
    (ValueError for a malformed pattern: at load, never while a call is routed)."""

    pattern: str
    profile: str
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_pattern(self.pattern))

    def matches(self, number: str) -> bool:
        return self.regex.fullmatch(number) is not None


@dataclass(frozen=True)
class Config:
    ari: AriSettings
    sip: SipSettings
    bridge: BridgeSettings
    store_path: Path
    routing: Mapping[str, str]
    profiles: Mapping[str, BotProfile]
    routes: tuple[Route, ...]
    state_dir: Path
    # reports: [reports], [http], [smtp], [[report_schedules]] (docs/reports.md)
    reports: ReportsSettings
    http: HttpSettings
    smtp: SmtpSettings
    ari_password: str = field(repr=False, default="")
    # database URL of the interaction store (may hold a password: never in repr or logs)
    store_url: str = field(repr=False, default="")
    # this instance's name in the records it writes (reconciliation is per node)
    store_node: str = ""
    billing: BillingSettings = BillingSettings()
    logging: LoggingSettings = LoggingSettings()
    report_schedules: tuple[ReportSchedule, ...] = ()
    limits: Limits = DEFAULT_LIMITS
    # seconds between the record writer's batches ([store] flush_interval_seconds)
    store_flush_seconds: float = 0.2
    bot_health: BotHealthSettings = BotHealthSettings()
    webhooks: WebhookSettings = WebhookSettings()
    bye_context: ByeContextSettings = ByeContextSettings()
    # the Kamailio edge in front of several nodes ([edge], docs/scaling.md); None in
    # configs built by hand (tests), load_config always fills it
    edge: EdgeSettings | None = None

    @property
    def billing_rounding(self) -> str:
        return self.billing.rounding

    @property
    def ari_url(self) -> str:
        return self.ari.url.rstrip("/")

    @property
    def app_name(self) -> str:
        return self.ari.app

    def bot_health_endpoints(self) -> dict[str, tuple[str, int]]:
        """The probed bot URIs: health endpoint name -> (URI, qualify seconds).

        Every distinct bot URI of the profiles, in order, is number n (from 1); the ones with
        a probe period above 0 get an endpoint and AOR ``botbridge-bot-<n>`` in pjsip.conf,
        which Asterisk qualifies with SIP OPTIONS and the app watches over ARI."""
        periods: dict[str, int] = {}
        for profile in self.profiles.values():
            for bot in profile.targets:
                if bot.uri and bot.uri not in periods:
                    period = bot.qualify_frequency_seconds
                    if period is None:
                        period = self.bot_health.qualify_frequency_seconds
                    periods[bot.uri] = period
        return {
            f"{BOT_HEALTH_PREFIX}{n}": (uri, period)
            for n, (uri, period) in enumerate(periods.items(), start=1)
            if period > 0
        }

    def state_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.state_dir / path

    def with_password(self, password: str) -> Config:
        return replace(self, ari_password=password)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the TOML file (argument or BOTBRIDGE_CONFIG), then env, then overrides."""
    env = os.environ if env is None else env
    raw = tomllib.loads(resources.files("ari_app").joinpath("defaults.toml").read_text())
    file_path = path or env.get("BOTBRIDGE_CONFIG")
    if file_path:
        try:
            user = tomllib.loads(Path(file_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc}") from exc
        _merge(raw, user)
    for name, (section, key) in ENV_OVERRIDES.items():
        if name in env:
            _section(raw, section)[key] = _coerce(env[name], _section(raw, section).get(key))
    if overrides:
        _merge(raw, {k: dict(v) for k, v in overrides.items()})
    try:
        data = _ConfigSchema().load(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_flatten(exc.messages)}") from exc
    state_dir = Path(env.get("BOTBRIDGE_STATE_DIR") or Path.cwd() / "var").resolve()
    store: StoreSettings = data["store"]
    config = Config(
        ari=data["ari"],
        sip=data["sip"],
        bridge=data["bridge"],
        store_path=Path(),
        routing=dict(data["routing"]),
        profiles={name: _profile(name, prof) for name, prof in data["profiles"].items()},
        routes=tuple(data["routes"]),
        state_dir=state_dir,
        reports=data["reports"],
        http=data["http"],
        smtp=data["smtp"],
        billing=data["billing"],
        logging=data["logging"],
        report_schedules=tuple(data["report_schedules"]),
        limits=data["limits"],
        store_flush_seconds=store.flush_interval_seconds,
        bot_health=data["bot_health"],
        webhooks=data["webhooks"],
        bye_context=data["bye_context"],
        edge=data["edge"],
    )
    config = replace(config, store_path=config.state_path(store.path))
    config = replace(
        config,
        store_url=_store_url(config, store.url),
        store_node=store.node or default_node(config),
    )
    return config.with_password(_ari_password(config, env))


def _store_url(config: Config, url: str) -> str:
    """``[store] url`` checked, or the SQLite file under the state directory."""
    if not url:
        return f"sqlite:///{config.store_path}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise ConfigError(f"invalid configuration: store.url: not a database URL ({exc})") from exc
    if backend not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"invalid configuration: store.url: {backend!r} databases are not supported; "
            "use sqlite:///<path> or postgresql+psycopg://user:password@host/db"
        )
    return url


def default_node(config: Config) -> str:
    """``<hostname>/<ARI host:port>/<app>``: one name per app instance and its Asterisk."""
    netloc = urlsplit(config.ari_url).netloc.rsplit("@", 1)[-1]
    return f"{socket.gethostname()}/{netloc}/{config.app_name}"


ARI_SECRET_BYTES = 24


def ensure_password_file(config: Config) -> Path:
    """Create the ARI secret file with a random password when absent (mode 0600)."""
    return ensure_secret_file(config.state_path(config.ari.password_file), ARI_SECRET_BYTES)


HEP_SECRET_BYTES = 24


def hep_password(config: Config) -> str:
    """The HEP capture password (``[bye_context] password_file``, created when absent)."""
    path = ensure_secret_file(config.state_path(config.bye_context.password_file), HEP_SECRET_BYTES)
    return path.read_text().strip()


def ensure_secret_file(path: Path, nbytes: int) -> Path:
    """Create ``path`` with a random URL-safe secret when absent (mode 0600, never replaced)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes) + "\n")
    return path


def client_ssl_context(config: Config, ca_file: str) -> ssl.SSLContext:
    """A verifying client TLS context: trust ``ca_file`` (state-relative), or the system store.

    Raises FileNotFoundError naming the file when it is configured but missing.
    """
    if not ca_file:
        return ssl.create_default_context()
    path = config.state_path(ca_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return ssl.create_default_context(cafile=str(path))


def _ari_password(config: Config, env: Mapping[str, str]) -> str:
    if env.get("BOTBRIDGE_ARI_PASSWORD"):
        return env["BOTBRIDGE_ARI_PASSWORD"]
    path = config.state_path(config.ari.password_file)
    try:
        return path.read_text().strip()
    except OSError:
        return ""  # `make setup` or the stack creates it; the app refuses to start without


def _section(raw: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = raw
    for part in dotted.split("."):
        node = node.setdefault(part, {})
    return node


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key != "routing":
            _merge(base[key], value)
        else:
            base[key] = value


def _coerce(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        return text.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int | float):
        try:
            return type(current)(text)
        except ValueError:
            return text  # the schema reports it with the key's name
    return text


def _flatten(messages: Any, prefix: str = "") -> str:
    if isinstance(messages, dict):
        # marshmallow files errors of a Dict's values under "value": not a key a user wrote
        return "; ".join(
            _flatten(v, prefix if k == "value" else f"{prefix}{k}.") for k, v in messages.items()
        )
    if isinstance(messages, list):
        return f"{prefix.rstrip('.')}: " + ", ".join(str(m) for m in messages)
    return f"{prefix.rstrip('.')}: {messages}"


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """An exact number or an Asterisk extension pattern (_X., _NXX, [1-5], ., !) as a regex.

    Raises ValueError saying what is wrong with a malformed pattern (an unclosed ``[``, an
    empty or reversed class).
    """
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    regex = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "X":
            regex.append("[0-9]")
        elif ch == "Z":
            regex.append("[1-9]")
        elif ch == "N":
            regex.append("[2-9]")
        elif ch == ".":
            regex.append(".+")
        elif ch == "!":
            regex.append(".*")
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


def match_pattern(pattern: str, number: str) -> bool:
    """Asterisk extension pattern match (_X., _NXX, [1-5], ., !) or exact comparison.

    Raises ValueError for a malformed pattern; configured routes are compiled at load
    (``Route.regex``), so routing never meets one.
    """
    return compile_pattern(pattern).fullmatch(number) is not None
