"""The human side rendered: queues (queues.conf), agents and external targets (pjsip.conf),
and the dialplan globals the queue context reads (extensions.conf).

Everything here comes from ``[queues]``, ``[agents]`` and ``[external_targets]``
(ari_app/config/queues.py); nothing from a call.
"""

from __future__ import annotations

import re

from ari_app.config import Config, ConfigError, read_secret_file
from ari_app.config.headers import QUEUE_ARG_PREFIX
from ari_app.config.queues import EXTERNAL_PREFIX, AgentSettings, ExternalTarget

__all__ = [
    "EXTERNAL_PREFIX",
    "agent_interface",
    "agent_sections",
    "external_dialplan",
    "external_sections",
    "queue_figure_args",
    "queue_globals",
    "queue_sections",
]

# random bytes of a softphone secret made when its file is absent
AGENT_SECRET_BYTES = 18
# characters a secret cannot hold in pjsip.conf: a line break starts a new setting, ';' a
# comment
_SECRET_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f;]")


def agent_interface(name: str) -> str:
    """The queue member interface of agent ``name`` (its PJSIP endpoint)."""
    return f"PJSIP/{name}"


def queue_sections(config: Config) -> str:
    """One queues.conf section per ``[queues.<name>]``, with its static members."""
    sections = []
    for name, queue in config.queues.items():
        ring_in_use = queue.ring_in_use
        if ring_in_use is None:
            ring_in_use = config.bridge.agent_ring_in_use
        lines = [
            f"[{name}]",
            f"strategy = {queue.strategy}",
            f"timeout = {queue.timeout_seconds}",
            f"retry = {queue.retry_seconds}",
            f"wrapuptime = {queue.wrapup_seconds}",
            f"joinempty = {queue.join_empty}",
            f"leavewhenempty = {queue.leave_when_empty}",
            f"ringinuse = {'yes' if ring_in_use else 'no'}",
            f"maxlen = {queue.max_waiting}",
            f"announce-position = {queue.announce_position}",
            f"announce-holdtime = {queue.announce_holdtime}",
            f"announce-frequency = {queue.announce_frequency_seconds}",
        ]
        if queue.music_on_hold:
            lines.append(f"musicclass = {queue.music_on_hold}")
        if name in config.figures_queues:
            # QUEUE_VARIABLES() (its figures for the bot's User-to-User) answers only then
            lines.append("setqueuevar = yes")
        for agent_name, agent in config.agents.items():
            if agent.membership == "static" and name in agent.queues:
                penalty = agent.queues[name]
                lines.append(f"member => {agent_interface(agent_name)},{penalty},{agent_name}")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def queue_globals(config: Config) -> str:
    """extensions.conf ``[globals]`` lines the queue context reads per queue or target:
    Queue() options (``r``: ringing instead of music) and which names are external
    targets."""
    lines = []
    for name, queue in config.queues.items():
        lines.append(f"BOTBRIDGE_QOPTS_{name} = {'' if queue.music_on_hold else 'r'}")
    for name in config.external_targets:
        lines.append(f"BOTBRIDGE_EXTERNAL_{name} = 1")
    return "\n".join(lines)


def _endpoint(name: str, codecs: str, media: tuple[str, str], extra: list[str]) -> list[str]:
    address, bind = media
    return [
        f"[{name}]",
        "type = endpoint",
        "context = botbridge-agents",
        f"aors = {name}",
        "disallow = all",
        f"allow = {codecs}",
        "dtmf_mode = rfc4733",
        "direct_media = no",
        "rtp_symmetric = yes",
        f"media_address = {address}",
        f"bind_rtp_to_media_address = {bind}",
        "allow_transfer = no",
        *extra,
    ]


def agent_sections(config: Config, media: tuple[str, str]) -> str:
    """An endpoint and AOR per agent: a static contact, or a softphone that registers
    (digest auth, its secret from a file; at most ``max_contacts`` registrations)."""
    codecs = ",".join(config.sip.agent_codecs)
    out = []
    for name, agent in config.agents.items():
        if agent.registers:
            lines = _endpoint(name, codecs, media, ["identify_by = username", f"auth = {name}"])
            lines += ["force_rport = yes", "rewrite_contact = yes", ""]
            lines += [
                f"[{name}]",
                "type = aor",
                f"max_contacts = {agent.max_contacts}",
                "remove_existing = yes",
                "",
                f"[{name}]",
                "type = auth",
                "auth_type = userpass",
                f"username = {name}",
                f"password = {_agent_secret(config, name, agent)}",
            ]
        else:
            lines = _endpoint(name, codecs, media, ["identify_by = ip", ""])
            lines += [f"[{name}]", "type = aor", f"contact = {agent.contact}"]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out) or "; no agents ([agents], docs/configuration.md)\n"


def external_sections(config: Config, media: tuple[str, str]) -> str:
    """An endpoint, AOR (and outbound auth) per external target: the trunk towards an
    existing contact centre. Calls from it are refused (context botbridge-agents)."""
    out = []
    for name, target in config.external_targets.items():
        endpoint = f"{EXTERNAL_PREFIX}{name}"
        extra = [
            "identify_by = ip",
            f"transport = transport-{target.transport}",
            f"media_encryption = {target.media_encryption}",
        ]
        if target.username:
            extra.append(f"outbound_auth = {endpoint}")
        lines = _endpoint(endpoint, ",".join(target.codecs), media, [*extra, ""])
        lines += [
            f"[{endpoint}]",
            "type = aor",
            f"contact = sip:{target.address};transport={target.transport}",
        ]
        if target.username:
            lines += [
                "",
                f"[{endpoint}]",
                "type = auth",
                "auth_type = userpass",
                f"username = {target.username}",
                f"password = {_target_secret(config, name, target)}",
            ]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out) or "; no external targets ([external_targets])\n"


def queue_figure_args(config: Config) -> str:
    """The Stasis() arguments with the live figures of each profile's default_queue that a
    profile puts in its bot's User-to-User (context_keys agents_available, estimated_wait),
    passed with a new call and with a caller back from a failed queue or target:
    ``,queue.<name>=<members ready>:<QUEUE_VARIABLES' result, 0 when it set them>:<the
    average hold time it set>`` (queue_sections renders these queues with setqueuevar,
    without which QUEUE_VARIABLES sets nothing). Substituted left to right: QUEUEHOLDTIME is
    read after QUEUE_VARIABLES set it."""
    return "".join(
        f",{QUEUE_ARG_PREFIX}{q}=${{QUEUE_MEMBER({q},ready)}}:${{QUEUE_VARIABLES({q})}}"
        ":${QUEUEHOLDTIME}"
        for q in config.figures_queues
    )


def external_dialplan(config: Config) -> str:
    """``[botbridge-external]``: one extension per target. The caller is dialled at the
    configured destination with the agent's headers (the same pre-dial handler). Busy,
    rejected, unreachable or unanswered, it goes back to the app as from a failed queue
    (``Stasis(<app>,queue_ended,<status>)``: NOANSWER as TIMEOUT, BUSY as FULL, anything
    else as JOINUNAVAIL), where the profile's ``on_escalation_failure`` decides."""
    lines = []
    for name, target in config.external_targets.items():
        endpoint = f"{EXTERNAL_PREFIX}{name}"
        lines += [
            f"exten => {name},1,Dial(PJSIP/{target.destination}@{endpoint},"
            f"{target.answer_timeout_seconds},b(botbridge-agent-predial^s^1))",
            f" same => n,Stasis({config.ari.app},queue_ended,{_QUEUE_STATUS_OF_DIAL}"
            f"{queue_figure_args(config)})",
            " same => n,Hangup()",
        ]
    return "\n".join(lines) or "; no external targets ([external_targets])"


# DIALSTATUS as the QUEUESTATUS the app's failure handling reads (calls/escalation.py)
_QUEUE_STATUS_OF_DIAL = (
    '${IF($["${DIALSTATUS}" = "NOANSWER"]?TIMEOUT:'
    '${IF($["${DIALSTATUS}" = "BUSY"]?FULL:JOINUNAVAIL)})}'
)


def _agent_secret(config: Config, name: str, agent: AgentSettings) -> str:
    path = config.state_path(agent.password_file)
    setting = f"agents.{name}.password_file"
    return _checked(read_secret_file(path, AGENT_SECRET_BYTES, setting), setting)


def _target_secret(config: Config, name: str, target: ExternalTarget) -> str:
    """The trunk's password: the file must exist (a random one would never match)."""
    path = config.state_path(target.password_file)
    setting = f"external_targets.{name}.password_file"
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} does not exist; write the trunk's password there")
    return _checked(read_secret_file(path, AGENT_SECRET_BYTES, setting), setting)


def _checked(secret: str, setting: str) -> str:
    if _SECRET_FORBIDDEN.search(secret):
        raise ConfigError(f"{setting}: the secret holds a line break or ';' (pjsip.conf)")
    return secret
