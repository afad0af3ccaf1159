"""What the bot's REFER means for the caller: pure decisions, no I/O.

The Refer-To (parsed once, ari_app/sip/refer_to.py) and the REFER's User-to-User headers
give the bot's context; the routing map turns its ``escalate_to`` into a queue; the caller's
channel variables carry the result into the dialplan, every value reduced to a safe
alphabet (the bot's data is untrusted).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from ari_app.calls.routing import queue_for
from ari_app.config import BotProfile, Config
from ari_app.config.headers import AGENT_HEADER_VARIABLE_PREFIX, agent_header_variable
from ari_app.sip import ReferTo, parse_refer_to, uui

log = logging.getLogger(__name__)

VAR_PREFIX = "BOTBRIDGE_"
# channel variables set on the caller before it enters a queue (documented in docs/)
VAR_INTERACTION_ID = VAR_PREFIX + "INTERACTION_ID"
VAR_OUTCOME = VAR_PREFIX + "OUTCOME"
VAR_QUEUE = VAR_PREFIX + "QUEUE"
VAR_ESCALATE_TO = VAR_PREFIX + "ESCALATE_TO"
VAR_CONTEXT = VAR_PREFIX + "CONTEXT"
VAR_CONTEXT_KEY = VAR_PREFIX + "CTX_"
VAR_UUI = VAR_PREFIX + "UUI"
VAR_ERROR = VAR_PREFIX + "ERROR"
VAR_PROFILE = VAR_PREFIX + "PROFILE"
# the variables an agent's channel inherits from the caller (the agent pre-dial reads them):
# set with Asterisk's "__" prefix by the app itself, so that the queue's dialplan is one
# Queue() and the followed caller publishes no events for copying them
INHERITED_VARIABLES = (VAR_INTERACTION_ID, VAR_ESCALATE_TO, VAR_UUI)

# REFER headers that may carry the bot's context, in order of preference
REFER_UUI_HEADERS = ("User-to-User", "x-User-to-User")
MAX_CONTEXT_VARIABLES = 16
ATTENDED_TRANSFER_IGNORED = "attended_transfer_ignored"


@dataclass(frozen=True, kw_only=True)
class TransferDecision:
    """Where the caller goes and why: the bot's REFER (or BYE) decoded and routed, or the
    fallback queue with the reason (built by keyword: ``TransferDecision(queue=q,
    error=reason)``)."""

    queue: str
    escalate_to: str | None = None
    context: uui.Context | None = None
    error: str | None = None  # reason code when the context or target was unusable
    refer_user: str | None = None
    # the bot's own headers copied onto the agent's INVITE (profile bot_headers), checked
    headers: Mapping[str, str] = field(default_factory=dict)


def decide_transfer(
    config: Config, profile: BotProfile, refer_to: str | None, refer_headers: Mapping[str, str]
) -> TransferDecision:
    """Decode the bot's context from the Refer-To URI (or the REFER's own UUI header)."""
    limit = config.bridge.max_context_bytes
    error: str | None = None
    context: uui.Context | None = None
    refer: ReferTo | None = None
    try:
        # parsed once: the user part, the embedded UUI and Replaces all come from this value
        refer = parse_refer_to(refer_to) if refer_to else None
        raw = refer.user_to_user if refer else None
        if raw is None:
            raw = next((refer_headers[h] for h in _ci(refer_headers, REFER_UUI_HEADERS)), None)
        if raw is None:
            raise uui.ContextMissing("the REFER carries no User-to-User context")
        parsed = uui.parse_uui(raw, max_bytes=limit, discriminator=profile.uui_discriminator)
        context = uui.decode_uui_context(parsed, max_bytes=limit)
    except uui.ContextError as exc:
        error = exc.reason
        log.warning("bot context unusable (%s): %s", exc.reason, exc)
    escalate_to = context.get("escalate_to") if context else None
    decision = queue_for(config, profile, escalate_to)
    if error is None:
        error = decision.reason
    if error is None and refer is not None and refer.is_attended:
        # Asterisk has accepted the REFER before the app sees it; the Replaces is never acted
        # on (the caller is not joined to another dialog), the escalation goes ahead
        error = ATTENDED_TRANSFER_IGNORED
    # untrusted (may hold control characters): only ever logged with %r
    refer_user = refer.user if refer else None
    return TransferDecision(
        queue=decision.queue,
        escalate_to=escalate_to,
        context=context,
        error=error,
        refer_user=refer_user,
    )


def caller_variables(
    interaction_id: str, profile: BotProfile, decision: TransferDecision, outcome: str
) -> dict[str, str]:
    """Channel variables for the caller; every value reduced to the safe alphabet."""
    variables = {
        VAR_INTERACTION_ID: interaction_id,
        VAR_OUTCOME: outcome,
        VAR_QUEUE: decision.queue,
        VAR_PROFILE: profile.name,
        VAR_ESCALATE_TO: uui.safe_value(decision.escalate_to or ""),
        VAR_ERROR: decision.error or "",
        VAR_CONTEXT: "",
        VAR_UUI: "",
    }
    if decision.context:
        # the full context travels re-encoded as hex: hex cannot carry dialplan syntax
        encoded = uui.encode_context(decision.context.pairs)
        variables[VAR_CONTEXT] = uui.safe_value(encoded.decode("utf-8", "replace"))
        variables[VAR_UUI] = uui.format_uui(encoded)
        for key, value in decision.context.pairs[:MAX_CONTEXT_VARIABLES]:
            try:
                variables[VAR_CONTEXT_KEY + uui.safe_key(key)] = uui.safe_value(value)
            except uui.ContextError:
                continue
    for name, value in decision.headers.items():
        # base64: the value reaches the agent's INVITE unchanged, and nothing in it can end
        # a variable in the one ARRAY() request that sets them all
        variables[agent_header_variable(name)] = base64.b64encode(value.encode()).decode()
    return variables


def as_channel_variables(variables: Mapping[str, str]) -> dict[str, str]:
    """The names to set on the caller's channel: the inherited ones with Asterisk's ``__``
    prefix (the value is read back under the plain name)."""
    return {(f"__{name}" if _inherited(name) else name): value for name, value in variables.items()}


def _inherited(name: str) -> bool:
    return name in INHERITED_VARIABLES or name.startswith(AGENT_HEADER_VARIABLE_PREFIX)


def _ci(headers: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    lower = {k.lower(): k for k in headers}
    return [lower[n.lower()] for n in names if n.lower() in lower]
