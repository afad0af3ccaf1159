"""Configuration: built-in defaults, an optional TOML file, then environment variables.

Each setting is declared once, as a typed field with its default on a frozen ``msgspec``
struct: one per section (``sections.py``, ``bots.py``, ``reporting.py``), and :class:`Config`
over them. ``load_config`` converts the merged TOML values into it in one pass; an error
names the bad key and the fix (``values.py``). ``ari_app/defaults.toml`` is the annotated
reference of the same defaults (a unit test keeps it equal to the structs).
"""

from __future__ import annotations

import os
import socket
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from ari_app.config.bots import (
    BOT_HEALTH_PREFIX,
    DEFAULT_PROFILE,
    DEFAULT_ROUTES,
    DEFAULT_ROUTING,
    DTMF_MODES,
    BotHealthSettings,
    BotProfile,
    BotTarget,
    QueueName,
    Route,
    check_profiles,
)
from ari_app.config.credentials import (
    check_ari_password,
    ensure_secret_file,
    mask_url,
    read_secret_file,
)
from ari_app.config.headers import check_carrier_headers, figures_queues
from ari_app.config.queues import (
    DEFAULT_QUEUES,
    AgentSettings,
    ExternalTarget,
    QueueSettings,
    answering_agent,
    check_human_side,
    default_agents,
)
from ari_app.config.reporting import (
    HttpSettings,
    ReportSchedule,
    ReportsSettings,
    SmtpSettings,
    check_schedules,
)
from ari_app.config.sections import (
    DEFAULT_LIMITS,
    LOG_LEVELS,
    AriSettings,
    BillingSettings,
    BridgeSettings,
    ByeContextSettings,
    Limits,
    LoggingSettings,
    SipSettings,
    StoreSettings,
    WebhookSettings,
)
from ari_app.config.values import (
    CODECS,
    ENDPOINT_NAME,
    ConfigError,
    Section,
    compile_pattern,
    convert,
    describe,
    match_pattern,
)

__all__ = [
    "BOT_HEALTH_PREFIX",
    "CODECS",
    "DEFAULT_LIMITS",
    "DTMF_MODES",
    "ENV_OVERRIDES",
    "LOG_LEVELS",
    "AgentSettings",
    "AriSettings",
    "BillingSettings",
    "BotHealthSettings",
    "BotProfile",
    "BotTarget",
    "BridgeSettings",
    "ByeContextSettings",
    "Config",
    "ConfigError",
    "ExternalTarget",
    "HttpSettings",
    "Limits",
    "LoggingSettings",
    "QueueSettings",
    "ReportSchedule",
    "ReportsSettings",
    "Route",
    "SipSettings",
    "SmtpSettings",
    "StoreSettings",
    "WebhookSettings",
    "answering_agent",
    "client_ssl_context",
    "compile_pattern",
    "default_node",
    "ensure_password_file",
    "ensure_secret_file",
    "hep_password",
    "load_config",
    "mask_url",
    "match_pattern",
    "read_secret_file",
]

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
# tables a file replaces whole instead of merging into the defaults ([queues] merges: a
# file adds queues to the shipped ones)
WHOLE = frozenset({"routing", "agents", "external_targets"})
AGENT_CONTACT = SipSettings().agent_contact
# how an environment variable spells a boolean
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# keys of Config that come from the environment, never from the file
_NOT_FROM_FILE = ("state_dir", "ari_password")
# tables of the file the app does not read: [edge] configures the dev tooling's Kamailio
# edge (devtools/edge.py, docs/scaling.md)
TOOLING_TABLES = ("edge",)


class Config(Section, frozen=True):
    """The whole configuration: every section, the state directory and the ARI password."""

    ari: AriSettings = AriSettings()
    sip: SipSettings = SipSettings()
    bridge: BridgeSettings = BridgeSettings()
    limits: Limits = DEFAULT_LIMITS
    store: StoreSettings = StoreSettings()
    billing: BillingSettings = BillingSettings()
    bot_health: BotHealthSettings = BotHealthSettings()
    logging: LoggingSettings = LoggingSettings()
    # escalate_to value from the bot -> a [queues] or [external_targets] name
    routing: Mapping[Annotated[str, Meta(min_length=1, max_length=64)], QueueName] = {}
    # the human side (config/queues.py): queues, agents, existing contact centres
    queues: Mapping[QueueName, QueueSettings] = {}
    agents: Mapping[Annotated[str, ENDPOINT_NAME], AgentSettings] = {}
    external_targets: Mapping[Annotated[str, ENDPOINT_NAME], ExternalTarget] = {}
    profiles: Mapping[Annotated[str, ENDPOINT_NAME], BotProfile] = {}
    routes: tuple[Route, ...] = ()
    webhooks: WebhookSettings = WebhookSettings()
    bye_context: ByeContextSettings = ByeContextSettings()
    # reports: [reports], [http], [smtp], [[report_schedules]] (docs/reports.md)
    reports: ReportsSettings = ReportsSettings()
    http: HttpSettings = HttpSettings()
    smtp: SmtpSettings = SmtpSettings()
    report_schedules: tuple[ReportSchedule, ...] = ()
    state_dir: Path = Path()  # BOTBRIDGE_STATE_DIR, resolved
    ari_password: str = ""  # never in repr or logs

    def _validate(self) -> None:
        if self.profiles:  # a Config made by hand may leave them out
            check_profiles(self.profiles, self.routes)
            check_carrier_headers(
                (p.carrier_headers for p in self.profiles.values()),
                self.bridge.max_header_bytes,
                self.figures_queues,
            )
        if self.profiles and self.queues:
            check_human_side(
                self.queues, self.agents, self.external_targets, self.routing, self.profiles
            )
        check_schedules(self.report_schedules, self.smtp)

    @property
    def figures_queues(self) -> tuple[str, ...]:
        """The queues whose live figures the dialplan hands the app (config/headers.py)."""
        return figures_queues((p.default_queue, p.context_keys) for p in self.profiles.values())

    def __repr__(self) -> str:
        shown = (
            f"{name}={'***' if name == 'ari_password' and value else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"Config({', '.join(shown)})"

    def warm_profiles(self) -> list[BotProfile]:
        """The profiles with warm_transfer: with any, the bot endpoint takes consult calls."""
        return [p for p in self.profiles.values() if p.warm_transfer]

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


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the TOML file (argument or BOTBRIDGE_CONFIG), then env, then overrides."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {
        "profiles": {"default": dict(DEFAULT_PROFILE)},
        "routing": dict(DEFAULT_ROUTING),
        "routes": [dict(route) for route in DEFAULT_ROUTES],
        "queues": {name: dict(queue) for name, queue in DEFAULT_QUEUES.items()},
    }
    file_path = path or env.get("BOTBRIDGE_CONFIG")
    if file_path:
        try:
            user = tomllib.loads(Path(file_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc}") from exc
        for table in TOOLING_TABLES:
            user.pop(table, None)
        _merge(raw, user)
    for name, (section, key) in ENV_OVERRIDES.items():
        if name in env:
            _section(raw, section)[key] = _from_env(name, env[name], section, key)
    if overrides:
        _merge(raw, {k: dict(v) for k, v in overrides.items()})
    named = _NAMED_TABLES
    if "agents" not in raw:  # the shipped agent, at [sip] agent_contact (checked as that)
        raw["agents"] = default_agents(_section(raw, "sip").get("agent_contact", AGENT_CONTACT))
        named = tuple(t for t in named if t[0] != "agents")
    for key in _NOT_FROM_FILE:
        if key in raw:
            raise ConfigError(f"invalid configuration: {key}: not a setting of the file")
    _normalize(raw)
    for table, kind in named:  # an error names the table's entry
        entries = raw.get(table)
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            convert(entry, kind, where=f"{table}.{name}.")
    try:
        config = msgspec.convert(raw, Config, dec_hook=_refuse)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe(exc)}") from exc
    config = msgspec.structs.replace(
        config,
        profiles={
            name: msgspec.structs.replace(p, name=name) for name, p in config.profiles.items()
        },
        state_dir=Path(env.get("BOTBRIDGE_STATE_DIR") or Path.cwd() / "var").resolve(),
    )
    config = msgspec.structs.replace(config, store=_store(config))
    return msgspec.structs.replace(config, ari_password=_ari_password(config, env))


# tables of named entries, converted one by one first so that an error names the entry
_NAMED_TABLES: tuple[tuple[str, type[Section]], ...] = (
    ("profiles", BotProfile),
    ("queues", QueueSettings),
    ("agents", AgentSettings),
    ("external_targets", ExternalTarget),
)


def _refuse(kind: type, value: Any) -> Any:
    raise TypeError(f"{kind.__name__} values come from the environment, not the file")


def _normalize(raw: dict[str, Any]) -> None:
    """The few values whose TOML form differs from the struct's."""
    ari = raw.get("ari")
    if isinstance(ari, dict) and isinstance(ari.get("url"), str):
        ari["url"] = ari["url"].rstrip("/")
    bye = raw.get("bye_context")
    if isinstance(bye, dict) and isinstance(bye.get("sources"), str):
        bye["sources"] = [a.strip() for a in bye["sources"].split(",") if a.strip()]


def _store(config: Config) -> StoreSettings:
    """``[store]`` resolved: the absolute path, the URL (checked) and the node name."""
    store = config.store
    path = config.state_path(store.path)
    url = store.url or f"sqlite:///{path}"
    if store.url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(url).get_backend_name()
        except (ArgumentError, ValueError):
            # the message of SQLAlchemy's error repeats the URL, password included
            raise ConfigError(
                f"invalid configuration: store.url: not a database URL: {mask_url(url)}"
            ) from None
        if backend not in {"sqlite", "postgresql"}:
            raise ConfigError(
                f"invalid configuration: store.url: {backend!r} databases are not supported; "
                "use sqlite:///<path> or postgresql+psycopg://user:password@host/db"
            )
    return msgspec.structs.replace(
        store, path=str(path), url=url, node=store.node or default_node(config)
    )


def default_node(config: Config) -> str:
    """``<hostname>/<ARI host:port>/<app>``: one name per app instance and its Asterisk."""
    netloc = urlsplit(config.ari.url).netloc.rsplit("@", 1)[-1]
    return f"{socket.gethostname()}/{netloc}/{config.ari.app}"


ARI_SECRET_BYTES = 24


def ensure_password_file(config: Config) -> Path:
    """Create the ARI secret file with a random password when absent (mode 0600)."""
    return ensure_secret_file(config.state_path(config.ari.password_file), ARI_SECRET_BYTES)


HEP_SECRET_BYTES = 24


def hep_password(config: Config) -> str:
    """The HEP capture password (``[bye_context] password_file``, created when absent;
    ConfigError when the file is empty)."""
    path = config.state_path(config.bye_context.password_file)
    return read_secret_file(path, HEP_SECRET_BYTES, "bye_context.password_file")


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
    """BOTBRIDGE_ARI_PASSWORD or the password file's first line, checked for ari.conf."""
    if env.get("BOTBRIDGE_ARI_PASSWORD"):
        return check_ari_password(env["BOTBRIDGE_ARI_PASSWORD"], "BOTBRIDGE_ARI_PASSWORD")
    path = config.state_path(config.ari.password_file)
    try:
        text = path.read_text().strip()
    except OSError:
        return ""  # `make setup` or the stack creates it; the app refuses to start without
    return check_ari_password(text, str(path))


def _section(raw: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = raw
    for part in dotted.split("."):
        node = node.setdefault(part, {})
    return node


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key not in WHOLE:
            _merge(base[key], value)
        else:
            base[key] = value


def _from_env(name: str, text: str, section: str, key: str) -> Any:
    """``text`` as the type of ``section.key``; ConfigError naming the variable when it is
    not a boolean or number where one is expected."""
    kind = _kind(section, key)
    where = f"invalid configuration: {name} ({section}.{key})"
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ConfigError(f"{where}: {text!r} is not a boolean; use true or false")
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(
                f"{where}: {text!r} is not a {'whole ' if kind is int else ''}number"
            ) from None
    return text


def _kind(section: str, key: str) -> Any:
    """The plain type (bool, int, float, str) of the setting ``section.key``."""
    owner: Any = Config
    for part in section.split("."):
        fields = {f.name: f.type for f in msgspec.structs.fields(owner)}
        owner = fields.get(part, owner)
        if get_origin(owner) is not None and get_origin(owner) is not Annotated:
            owner = get_args(owner)[-1]  # profiles.default: the Mapping's value type
    kind = {f.encode_name: f.type for f in msgspec.structs.fields(owner)}[key]
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return kind
