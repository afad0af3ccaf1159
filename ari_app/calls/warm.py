"""A consult call of a call's bot (warm transfer): its state, kept on the call
(``Call.consult``); what happens to it is calls/consult.py's."""

from __future__ import annotations

from dataclasses import dataclass

from ari_app.calls.transfer import TransferDecision

__all__ = ["ARI_ONLY", "CORE", "TRANSFER_HANDLING", "Consult"]

# the bot leg's transfer handling while a consult runs, and after it
TRANSFER_HANDLING = "PJSIP_TRANSFER_HANDLING()"
ARI_ONLY, CORE = "ari-only", "core"


@dataclass(eq=False)
class Consult:
    """One consult call of a call's bot, from its arrival to its end or the transfer."""

    channel_id: str  # the bot's consult call
    agent_leg_id: str  # Local;1, in the consult's bridge, dialled by the app
    queue_half_id: str  # Local;2, running Queue()
    bridge_id: str
    decision: TransferDecision
    started_at: float
    answered_at: float | None = None
    agent_channel: str | None = None
    agent: str | None = None
    transferred: bool = False
    ended: bool = False

    @property
    def channel_ids(self) -> tuple[str, str, str]:
        return (self.channel_id, self.agent_leg_id, self.queue_half_id)
