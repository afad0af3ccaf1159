"""Names the rendered dialplan and the app share for warm transfer (asterisk/consult.py
renders them, calls/consult.py uses them): one place, so the two cannot drift apart."""

from __future__ import annotations

__all__ = [
    "CONSULT_AGENT_ARG",
    "CONSULT_ARG",
    "CONSULT_CONTEXT",
    "CONSULT_QUEUE_CONTEXT",
    "CONSULT_TIMEOUT_VARIABLE",
    "TRANSFER_CONTEXT",
]

# where a bot's blind REFER lands (Local/<Refer-To user>@botbridge-transfer)
TRANSFER_CONTEXT = "botbridge-transfer"
# the bot endpoint's context when some profile has warm_transfer: consult calls start here
CONSULT_CONTEXT = "botbridge-consult"
# the queue half of a consult's agent leg (Local/s@botbridge-consult-queue/n)
CONSULT_QUEUE_CONTEXT = "botbridge-consult-queue"
# the first Stasis() argument of a consult call, and of the agent leg the app makes for it
CONSULT_ARG = "consult"
CONSULT_AGENT_ARG = "consult_agent"
# set by the app on the agent leg: how long the consult may wait in the queue (seconds)
CONSULT_TIMEOUT_VARIABLE = "BOTBRIDGE_CONSULT_TIMEOUT"
