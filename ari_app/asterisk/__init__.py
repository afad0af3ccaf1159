"""The shipped Asterisk configuration: templates and their renderer.

The ``*.conf`` files beside this module are templates with ``{{NAME}}`` placeholders, filled
from the app's configuration (:func:`template_values`). They are package data: an installed
wheel renders them (``ari-app render-config``) as the dev stack and the tests do
(devtools/stack.py), so production runs exactly the configuration the tests run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

from ari_app.asterisk.certs import write_self_signed
from ari_app.asterisk.consult import consult_values
from ari_app.asterisk.hold_music import write_hold_tone
from ari_app.asterisk.human import (
    agent_sections,
    external_dialplan,
    external_sections,
    queue_figure_args,
    queue_globals,
    queue_sections,
)
from ari_app.config import Config, ConfigError, hep_password
from ari_app.config.credentials import check_ari_password, read_given_secret
from ari_app.config.headers import (
    HEADER_ARG_PREFIX,
    agent_header_variable,
    agent_headers,
    dialplan_headers,
)

__all__ = [
    "CONFIG_FILES",
    "RenderError",
    "agent_header_steps",
    "bot_auth_sections",
    "carrier_header_args",
    "find_module_dir",
    "make_self_signed",
    "queue_figure_args",
    "render",
    "render_instance",
    "rtp_bind_address",
    "signalling_permit",
    "template_text",
    "template_values",
]

CONFIG_FILES = (
    "asterisk.conf",
    "modules.conf",
    "pjsip.conf",
    "extensions.conf",
    "queues.conf",
    "http.conf",
    "ari.conf",
    "logger.conf",
    "rtp.conf",
    "musiconhold.conf",
    "cdr.conf",
    "cel.conf",
    "features.conf",
    "indications.conf",
    "acl.conf",
    "udptl.conf",
    "ccss.conf",
    "pjproject.conf",
    "websocket_client.conf",
    "queuerules.conf",
    "hep.conf",
)
# the rendered files that hold a secret (the ARI password, the HEP capture password, bots',
# agents' and trunks' digest passwords): mode 0600
SECRET_CONFIG_FILES = ("ari.conf", "hep.conf", "pjsip.conf")
# days a self-signed development certificate made for an instance stays valid
DEV_CERT_DAYS = 825
# where distributions install Asterisk's modules (the first with chan_pjsip.so wins)
MODULE_DIR_GLOBS = ("usr/lib/*/asterisk/modules", "usr/lib/asterisk/modules")

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


class RenderError(RuntimeError):
    """The configuration cannot be rendered; the message names what is missing."""


def template_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill {{NAME}} placeholders; an unknown placeholder is an error, never left blank."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise RenderError(f"config template needs a value for {{{{{name}}}}}")
        return str(values[name])

    return _PLACEHOLDER.sub(fill, template)


def template_values(config: Config, dirs: Mapping[str, str], module_dir: str) -> dict[str, object]:
    sip, bridge = config.sip, config.bridge
    ari_host, ari_port = _host_port(config.ari.url)
    ari_tls = config.ari.url.lower().startswith("https:")
    default = config.profiles["default"]
    return {
        **dirs,
        "MODULE_DIR": module_dir,
        "DATA_DIR": "/usr/share/asterisk",
        "MAX_CALLS": bridge.max_calls,
        "SIP_HOST": sip.host,
        "SIP_PORT": sip.port,
        "SIP_TLS_PORT": sip.tls_port,
        "TLS_CERT_FILE": dirs["TLS_CERT_FILE"],
        "TLS_KEY_FILE": dirs["TLS_KEY_FILE"],
        "TLS_CA_FILE": dirs.get("TLS_CA_FILE", ""),
        "TLS_VERIFY_SERVER": _yes_no(sip.tls_verify_server),
        "CARRIER_MATCH": sip.carrier_match,
        "SIGNALLING_PERMIT": signalling_permit(
            sip.carrier_match,
            sip.bot_match,
            sip.agent_match,
            *(target.host for target in config.external_targets.values()),
        ),
        "CARRIER_MEDIA_ENCRYPTION": sip.carrier_media_encryption,
        "CARRIER_MEDIA_ENCRYPTION_OPTIMISTIC": _yes_no(sip.carrier_media_encryption_optimistic),
        "BOT_MEDIA_ENCRYPTION": sip.bot_media_encryption,
        "BOT_MEDIA_ENCRYPTION_OPTIMISTIC": _yes_no(sip.bot_media_encryption_optimistic),
        "CARRIER_CODECS": ",".join(sip.carrier_codecs),
        "AGENT_CODECS": ",".join(sip.agent_codecs),
        # the voicebot endpoint is the default profile's (profiles sharing it agree)
        "BOT_CODECS": ",".join(default.codecs),
        "BOT_DTMF_MODE": default.dtmf_mode,
        "BOT_CONTACT": default.bot_uri or f"sip:{default.bot_endpoint}@127.0.0.1",
        "ARI_HOST": ari_host,
        "ARI_PORT": ari_port,
        # an https:// ARI url: TLS listener only, the plain HTTP server is not started
        "ARI_HTTP_ENABLED": _yes_no(not ari_tls),
        "ARI_TLS_ENABLED": _yes_no(ari_tls),
        "ARI_TLS_CERT_FILE": dirs.get("ARI_TLS_CERT_FILE", dirs["TLS_CERT_FILE"]),
        "ARI_TLS_KEY_FILE": dirs.get("ARI_TLS_KEY_FILE", dirs["TLS_KEY_FILE"]),
        "ARI_USER": config.ari.username,
        "ARI_PASSWORD": config.ari_password,
        "ARI_APP": config.ari.app,
        # RTP bound to the SIP address (docs/asterisk-tuning.md): with a wildcard bind Asterisk
        # resolves its host name and A.ROOT-SERVERS.NET for every RTP session it creates
        "MEDIA_ADDRESS": rtp_bind_address(sip.host),
        "BIND_RTP_TO_MEDIA_ADDRESS": _yes_no(bool(rtp_bind_address(sip.host))),
        "RTP_START": sip.rtp_start,
        "RTP_END": sip.rtp_end,
        "TRANSFER_HOLD_SECONDS": bridge.transfer_hold_seconds,
        "QUEUE_TIMEOUT_SECONDS": bridge.queue_timeout_seconds,
        # where a caller goes when the app cannot take the call (fail open, [botbridge-bypass])
        "FALLBACK_QUEUE": default.fallback_queue,
        # the dialplan hands the business_hours value to the app as a Stasis() argument
        "AVAILABILITY_ARG": "${" + bridge.availability_variable + "}",
        "CARRIER_HEADER_ARGS": carrier_header_args(config),
        "QUEUE_FIGURE_ARGS": queue_figure_args(config),
        "AGENT_HEADER_STEPS": agent_header_steps(config),
        "BOT_HEALTH": bot_health_sections(config),
        "BOT_AUTH": bot_auth_sections(config),
        **_human_values(config),
        **_hep_values(config),
        **consult_values(config),
    }


def carrier_header_args(config: Config) -> str:
    """The Stasis() arguments that hand the carrier's headers to the app (config/headers.py):
    ``,hdr.<name>=<base64 of ":" + the first max_header_bytes + 1 bytes of the header>``.
    The colon keeps BASE64_ENCODE from an empty argument (it warns on each) when the
    caller did not send the header; the extra byte shows an oversize value to the app."""
    cut = config.bridge.max_header_bytes + 1
    names = dialplan_headers(p.carrier_headers for p in config.profiles.values())
    return "".join(
        f",{HEADER_ARG_PREFIX}{name}=${{BASE64_ENCODE(:${{PJSIP_HEADER(read,{name}):0:{cut}}})}}"
        for name in names
    )


def agent_header_steps(config: Config) -> str:
    """The agent pre-dial's steps that put the bot's headers (profile bot_headers) onto the
    agent's INVITE, one per header some profile copies, when the caller carries it."""
    steps = []
    for name in agent_headers(p.bot_headers for p in config.profiles.values()):
        variable = agent_header_variable(name)
        steps.append(
            f' same => n,ExecIf($["${{{variable}}}" != ""]'
            f"?Gosub(botbridge-agent-header,s,1({name},${{{variable}}})))"
        )
    return "\n".join(steps) or "; (no profile copies headers of the bot's REFER: bot_headers)"


def _human_values(config: Config) -> dict[str, object]:
    """Queues, agents and external targets (asterisk/human.py)."""
    media = (rtp_bind_address(config.sip.host), _yes_no(bool(rtp_bind_address(config.sip.host))))
    queue = (
        "Queue(${BOTBRIDGE_QUEUE},${BOTBRIDGE_QOPTS_${BOTBRIDGE_QUEUE}}"
        f"b(botbridge-agent-predial^s^1),,,{config.bridge.queue_timeout_seconds})"
    )
    entry = f"exten => s,1,{queue}"
    if config.external_targets:  # one step more only where targets exist
        entry = (
            'exten => s,1,GotoIf($["${BOTBRIDGE_EXTERNAL_${BOTBRIDGE_QUEUE}}" != ""]'
            f"?botbridge-external,${{BOTBRIDGE_QUEUE}},1)\n same => n,{queue}"
        )
    return {
        "QUEUES": queue_sections(config),
        "QUEUE_GLOBALS": queue_globals(config),
        "QUEUE_ENTRY": entry,
        "AGENTS": agent_sections(config, media),
        "EXTERNAL_TARGETS": external_sections(config, media),
        "EXTERNAL_DIALPLAN": external_dialplan(config),
    }


def _hep_values(config: Config) -> dict[str, object]:
    """hep.conf and its modules: loaded only with [bye_context] enabled."""
    bye = config.bye_context
    if not bye.enabled:
        return {
            "HEP_ENABLED": "no",
            "HEP_CAPTURE_ADDRESS": f"{bye.capture_host}:{bye.capture_port}",
            "HEP_PASSWORD": "",
            "HEP_MODULES": "; (bye_context.enabled = false)",
        }
    return {
        "HEP_ENABLED": "yes",
        "HEP_CAPTURE_ADDRESS": f"{bye.capture_host}:{bye.capture_port}",
        "HEP_PASSWORD": hep_password(config),
        "HEP_MODULES": "load => res_hep.so\nload => res_hep_pjsip.so",
    }


def bot_health_sections(config: Config) -> str:
    """One endpoint and AOR per probed bot URI: Asterisk qualifies the AOR's contact with
    SIP OPTIONS and publishes its state (ARI ContactStatusChange, the endpoint's state). The
    endpoints carry no calls (no identify, never dialled); calls go through the profile's
    bot endpoint with the URI."""
    timeout = config.bot_health.qualify_timeout_seconds
    sections = []
    for name, (uri, period) in config.bot_health_endpoints().items():
        sections.append(
            f"[{name}]\ntype = aor\ncontact = {uri}\nqualify_frequency = {period}\n"
            f"qualify_timeout = {timeout}\n\n"
            f"[{name}]\ntype = endpoint\nidentify_by = ip\ncontext = botbridge-bot-health\n"
            f"aors = {name}\ndisallow = all\nallow = ulaw\nallow_transfer = no\n"
        )
    return "\n".join(sections) or "; no bot URI is probed ([bot_health], docs/configuration.md)\n"


def bot_auth_sections(config: Config) -> str:
    """Per bot URI with digest credentials: an auth section with its user name and password
    (read from its file) and an endpoint that is its profile's bot endpoint (inherited)
    with ``outbound_auth``, which the app dials that URI through (BotTarget.auth_endpoint).
    Asterisk answers the bot's 401/407 challenge with these credentials."""
    sections: dict[str, str] = {}
    for profile in config.profiles.values():
        for bot in profile.targets:
            name = bot.auth_endpoint
            if not name or name in sections:
                continue
            setting = f"profiles.{profile.name}.bots auth_password_file"
            given = read_given_secret(config.state_path(bot.auth_password_file), setting)
            realm = f"realm = {bot.auth_realm}\n" if bot.auth_realm else ""
            sections[name] = (
                f"[{name}]\ntype = auth\nauth_type = userpass\nusername = {bot.auth_username}\n"
                f"password = {given.replace(';', chr(92) + ';')}\n{realm}\n"
                f"[{name}]({profile.bot_endpoint})\noutbound_auth = {name}\n"
            )
    return "\n".join(sections.values()) or "; no bot has digest credentials\n"


# where an installed bridge keeps its ARI password (docs/deployment.md, contrib/systemd)
DEPLOYED_ARI_PASSWORD_FILE = "/etc/botbridge/ari-password"


def no_ari_password(config: Config) -> str:
    """What to do when there is no ARI password, said to the user of an installed wheel."""
    return (
        "no ARI password (BOTBRIDGE_ARI_PASSWORD is unset and "
        f"{config.state_path(config.ari.password_file)} cannot be read): set "
        f"BOTBRIDGE_ARI_PASSWORD, or write the password to {DEPLOYED_ARI_PASSWORD_FILE} "
        f"(mode 0600, docs/deployment.md) and set "
        f"BOTBRIDGE_ARI_PASSWORD_FILE={DEPLOYED_ARI_PASSWORD_FILE}"
    )


def render_instance(
    config: Config, root: Path, *, module_dir: str, path_of: Callable[[Path], str] = str
) -> None:
    """Render every file into ``root/etc`` with the directories of one instance under ``root``.

    ``path_of`` maps a host path to the path Asterisk sees (a chroot sees its own tree).
    """
    if not config.ari_password:
        raise RenderError(no_ari_password(config))
    try:  # load_config checked it; a Config made otherwise is checked here
        check_ari_password(config.ari_password, "the configuration")
    except ConfigError as exc:
        raise RenderError(str(exc)) from exc
    dirs: dict[str, str] = {}
    for key, sub in (
        ("ETC_DIR", "etc"),
        ("VARLIB_DIR", "lib"),
        ("SPOOL_DIR", "spool"),
        ("RUN_DIR", "run"),
        ("LOG_DIR", "log"),
        ("TLS_DIR", "tls"),
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
        dirs[key] = path_of(root / sub)
    cert, private_key = _tls_files(config, root)
    dirs["TLS_CERT_FILE"] = path_of(cert)
    dirs["TLS_KEY_FILE"] = path_of(private_key)
    if config.sip.tls_ca_file:
        ca_file = config.state_path(config.sip.tls_ca_file)
        if not ca_file.is_file():
            raise RenderError(f"sip.tls_ca_file {ca_file} is missing")
        shutil.copy(ca_file, root / "tls" / "peer-ca.crt")
        dirs["TLS_CA_FILE"] = path_of(root / "tls" / "peer-ca.crt")
    ari_cert, ari_key = _ari_tls_files(config, root, (cert, private_key))
    dirs["ARI_TLS_CERT_FILE"] = path_of(ari_cert)
    dirs["ARI_TLS_KEY_FILE"] = path_of(ari_key)
    try:
        values = template_values(config, dirs, module_dir)
    except ConfigError as exc:  # an empty HEP password file
        raise RenderError(str(exc)) from exc
    write_hold_tone(root / "lib" / "moh")
    for name in CONFIG_FILES:
        target = root / "etc" / name
        text = render(template_text(name), values)
        if name in SECRET_CONFIG_FILES:
            _write_private(target, text)
        else:
            target.write_text(text)


def _write_private(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` readable by its owner only, from the first byte."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def find_module_dir(root: Path = Path("/")) -> str:
    """Asterisk's module directory on this host (under ``root``), as Asterisk sees it."""
    for pattern in MODULE_DIR_GLOBS:
        for candidate in sorted(root.glob(pattern)):
            if (candidate / "chan_pjsip.so").exists():
                return "/" + str(candidate.relative_to(root))
    raise RenderError(f"no Asterisk module directory with chan_pjsip.so under {root}")


def _tls_files(config: Config, root: Path) -> tuple[Path, Path]:
    """Configured certificate files, or a self-signed development pair for this instance."""
    cert = config.state_path(config.sip.tls_cert_file)
    key = config.state_path(config.sip.tls_key_file)
    if cert.exists() and key.exists():
        # copy them where the runtime can read them (a chroot sees only its own tree)
        shutil.copy(cert, root / "tls" / "server.crt")
        shutil.copy(key, root / "tls" / "server.key")
    else:
        make_self_signed(root / "tls" / "server.crt", root / "tls" / "server.key")
    return root / "tls" / "server.crt", root / "tls" / "server.key"


def _ari_tls_files(config: Config, root: Path, sip_pair: tuple[Path, Path]) -> tuple[Path, Path]:
    """The pair for HTTPS ARI: ari.tls_cert_file/tls_key_file, else the SIP TLS pair."""
    if not config.ari.tls_cert_file:
        return sip_pair
    cert = config.state_path(config.ari.tls_cert_file)
    key = config.state_path(config.ari.tls_key_file)
    if not (cert.is_file() and key.is_file()):
        raise RenderError(
            f"ari.tls_cert_file {cert} or ari.tls_key_file {key} is missing "
            "(`make certs` makes a development pair under var/tls)"
        )
    shutil.copy(cert, root / "tls" / "ari.crt")
    shutil.copy(key, root / "tls" / "ari.key")
    return root / "tls" / "ari.crt", root / "tls" / "ari.key"


def make_self_signed(cert: Path, key: Path, common_name: str = "127.0.0.1") -> None:
    """A self-signed pair for ``common_name`` (in-process), unless both files exist."""
    write_self_signed(cert, key, common_name, DEV_CERT_DAYS)


def _host_port(url: str) -> tuple[str, int]:
    match = re.match(r"^https?://([^/:]+):(\d+)", url)
    if not match:
        raise RenderError(f"ARI url {url!r} must be http(s)://host:port/ari")
    return match.group(1), int(match.group(2))


def signalling_permit(*lists: str) -> str:
    """Union of allow-lists as an ACL permit value: addresses/CIDRs, ports dropped."""
    permit: list[str] = []
    for item in ",".join(lists).split(","):
        address = item.strip()
        if address.count(":") == 1:  # IPv4 address:port (identify match pins a port)
            address = address.split(":", 1)[0]
        if address and address not in permit:
            permit.append(address)
    return ",".join(permit)


def rtp_bind_address(host: object) -> str:
    """The address RTP binds to and the SDP announces: sip.host when it names one address.

    Empty for a wildcard (0.0.0.0, ::) or a name: Asterisk then binds RTP to every address
    and, per RTP session, looks up its own host name and A.ROOT-SERVERS.NET to pick the
    RTCP address (res_rtp_asterisk, ast_find_ourip), a DNS query on the SIP thread.
    """
    try:
        address = ipaddress.ip_address(str(host).strip().strip("[]"))
    except ValueError:
        return ""
    return "" if address.is_unspecified else str(address)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
