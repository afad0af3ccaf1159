"""The Asterisk side of warm transfer: the bot endpoint's consult entry and identify, and
the queue half of a consult's agent leg (docs/call-flows.md, "Warm transfer").

Rendered only when a profile has ``warm_transfer``; otherwise the bot endpoint keeps
``botbridge-transfer`` as its context and no identify, as before: a bot cannot start calls.
"""

from __future__ import annotations

from ari_app.config import BotProfile, Config, ConfigError, read_secret_file
from ari_app.config.dialplan import (
    CONSULT_ARG,
    CONSULT_CONTEXT,
    CONSULT_TIMEOUT_VARIABLE,
    TRANSFER_CONTEXT,
)
from ari_app.config.headers import HEADER_ARG_PREFIX

__all__ = ["consult_values"]

AUTH_NAME = "bot-consult-auth"
# the random password made for consult_password_file when it is absent (bytes)
CONSULT_SECRET_BYTES = 18
# tried before [carrier] (identify sections are tried in name order): a bot's consult must
# not be taken for a carrier call when both come from one host
IDENTIFY_NAME = "bot-consult"
# the consult's headers the app reads besides the profiles' interaction and bot headers
CONTEXT_HEADERS = ("User-to-User", "x-User-to-User")
# a consult header is read up to this many bytes past [bridge] max_context_bytes, twice
# over: the context travels hex-encoded in User-to-User, with its ";encoding=hex"
CONSULT_HEADER_SLACK = 32


def consult_values(config: Config) -> dict[str, object]:
    profiles = config.warm_profiles()
    if not profiles:
        return {
            "BOT_CONTEXT": TRANSFER_CONTEXT,
            "BOT_CONSULT_IDENTIFY": "; (no profile has warm_transfer: a bot cannot start calls)",
            "CONSULT_DIALPLAN": "exten => _[+0-9a-zA-Z*#]!,1,Hangup(21)",
            "CONSULT_QUEUE_ENTRY": "exten => s,1,NoOp(no profile has warm_transfer)",
            "BOT_CONSULT_AUTH": "; (no consult calls: nothing to authenticate)",
        }
    endpoints = sorted({p.bot_endpoint for p in profiles})
    hosts = sorted({host for p in profiles for t in p.bots if (host := _host_port(t.uri))})
    identify = "\n".join(
        f"[{IDENTIFY_NAME}-{endpoint}]\ntype = identify\nendpoint = {endpoint}\n"
        f"match = {','.join(hosts)}\n"
        for endpoint in endpoints
    )
    auth_line = "; consult calls are not challenged ([bridge] consult_auth_username)"
    username = config.bridge.consult_auth_username
    if username:
        # a 401 challenge on the consult INVITE, the only request a bot starts; requests
        # inside the bot's dialogs are never challenged
        auth_line = f"auth = {AUTH_NAME}"
        identify += (
            f"\n[{AUTH_NAME}]\ntype = auth\nauth_type = userpass\nusername = {username}\n"
            f"password = {_consult_secret(config)}\n"
        )
    return {
        "BOT_CONSULT_AUTH": auth_line,
        "BOT_CONTEXT": CONSULT_CONTEXT,
        "BOT_CONSULT_IDENTIFY": identify,
        "CONSULT_DIALPLAN": _consult_dialplan(config, profiles),
        "CONSULT_QUEUE_ENTRY": (
            "exten => s,1,Queue(${BOTBRIDGE_QUEUE},${BOTBRIDGE_QOPTS_${BOTBRIDGE_QUEUE}}"
            f"b(botbridge-agent-predial^s^1),,,${{{CONSULT_TIMEOUT_VARIABLE}}})"
        ),
    }


def _consult_dialplan(config: Config, profiles: list[BotProfile]) -> str:
    cut = 2 * config.bridge.max_context_bytes + CONSULT_HEADER_SLACK
    wanted = (
        *CONTEXT_HEADERS,
        *(h for p in profiles for h in (p.interaction_header, *p.bot_headers)),
    )
    names = list({name.lower(): name for name in reversed(wanted)}.values())[::-1]
    args = "".join(
        f",{HEADER_ARG_PREFIX}{name}=${{BASE64_ENCODE(:${{PJSIP_HEADER(read,{name}):0:{cut}}})}}"
        for name in names
    )
    return (
        f"exten => {config.bridge.consult_user},1,Stasis({config.ari.app},{CONSULT_ARG}{args})\n"
        " same => n,Hangup()\n"
        "; the end of a consult keeps the cause the app gave it (the pattern below matches h)\n"
        "exten => h,1,NoOp(consult ended)\n"
        "exten => _[+0-9a-zA-Z*#]!,1,Hangup(21)"
    )


def _consult_secret(config: Config) -> str:
    setting = "bridge.consult_password_file"
    path = config.state_path(config.bridge.consult_password_file)
    word = read_secret_file(path, CONSULT_SECRET_BYTES, setting)
    if any(ord(c) < 0x20 or c in ";#" for c in word):
        raise ConfigError(f"{setting}: the secret holds a control character, ';' or '#'")
    return word


def _host_port(uri: str) -> str:
    """``host[:port]`` of a SIP URI from the configuration (``sip:user@host:port;...``)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.rsplit("@", 1)[-1]
    return rest.split(";", 1)[0].split(">", 1)[0].strip()
