"""What a call uses, apart from what it is: the services every call session shares.

A :class:`CallSession` (ari_app/calls/session.py) holds one call's state; everything it
talks to or reports to (Asterisk, the record writer, the bots' pool, the BYE copies, the
metrics...) comes in one :class:`CallServices` bundle, built once by the app
(``BridgeApp``) and handed to every session it makes: a new call, a shed call, a call
re-adopted after a restart. A call can therefore never be built with part of them.

Also here: the call's ARI ids and the pure readings of Asterisk's values a session needs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ari_app.calls.bots import BotPool
from ari_app.calls.bye_context import ByeContexts
from ari_app.calls.control import CallControl
from ari_app.config import Config

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ari_app.records import RecordChange

__all__ = [
    "AvailabilitySource",
    "CallServices",
    "RecordSink",
    "SessionObserver",
    "availability_from_queue",
    "bot_channel_id_for",
    "bridge_id_for",
    "dialstatus_for_cause",
    "read_queue_availability",
]

AVAILABILITY_AVAILABLE = "available"
AVAILABILITY_BUSY = "busy"
AVAILABILITY_CLOSED = "closed"


class SessionObserver(Protocol):
    """Told of call milestones (the app's metrics); called synchronously, must not block."""

    def outcome(self, outcome: str) -> None: ...

    def transfer_handled(self, seconds: float) -> None: ...

    def agent_answered(self, queue: str, agent: str) -> None: ...


class RecordSink(Protocol):
    """Where a session's record changes go without waiting (ari_app/store/writer.py)."""

    def create(self, interaction_id: str, **fields: Unpack[RecordChange]) -> None: ...

    def update(self, interaction_id: str, **fields: Unpack[RecordChange]) -> None: ...


class AvailabilitySource(Protocol):
    async def get(self, queue: str, channel_id: str) -> str: ...


@dataclass(frozen=True, eq=False)
class CallServices:
    """Everything a call session uses; one per app, shared by all its calls."""

    ari: CallControl
    config: Config
    records: RecordSink
    # business_hours of a queue (cached, ari_app/calls/availability.py); None: read live
    availability: AvailabilitySource | None = None
    observer: SessionObserver | None = None
    # the app's bots (health, per-bot limits; ari_app/calls/bots.py)
    bots: BotPool = field(default_factory=BotPool)
    # [bye_context]: the HEP copies of BYEs (None when the feature is off)
    bye_contexts: ByeContexts | None = None
    # told of each new bot leg of a call, (caller channel id, leg id), before the leg is
    # created: the app routes the leg's events to the caller's call
    on_bot_channel: Callable[[str, str], None] | None = None
    # told, with the caller's channel id, when a call's max_bot_seconds has passed: the app
    # posts it to the call's queue of events (CallSession.bot_time_up)
    on_bot_time_up: Callable[[str], None] | None = None

    @functools.cached_property
    def consult_on(self) -> bool:
        """Some profile has warm_transfer (worked out once): the bot endpoint's context takes
        consult calls, so each bot leg names its transfer context itself."""
        return bool(self.config.warm_profiles())


def bot_channel_id_for(interaction_id: str, attempt: int = 1) -> str:
    """``bot-<iid>`` for the first bot dialled, ``bot-<iid>-<n>`` for the n-th."""
    return f"bot-{interaction_id}" if attempt == 1 else f"bot-{interaction_id}-{attempt}"


def bridge_id_for(interaction_id: str, returns: int = 0) -> str:
    """``call-<iid>``; after the n-th return to a bot, ``call-<iid>-r<n>`` (a bridge id is
    not free again the moment its bridge is destroyed: Asterisk answers 409 for a while)."""
    return f"call-{interaction_id}" if not returns else f"call-{interaction_id}-r{returns}"


# Q.850 hangup cause -> the Dial status Asterisk reports for it (lower case)
_CAUSE_DIALSTATUS = {
    1: "chanunavail",
    3: "chanunavail",
    17: "busy",
    18: "noanswer",
    19: "noanswer",
    20: "chanunavail",
    27: "chanunavail",
}


def dialstatus_for_cause(cause: int | None) -> str:
    return _CAUSE_DIALSTATUS.get(cause or 0, "congestion")


def availability_from_queue(logged_in: int, ready: int) -> str:
    """business_hours value derived from the live state of a queue's members."""
    if ready > 0:
        return AVAILABILITY_AVAILABLE
    if logged_in > 0:
        return AVAILABILITY_BUSY
    return AVAILABILITY_CLOSED


async def read_queue_availability(ari: CallControl, queue: str, channel_id: str) -> str:
    """business_hours from a queue's live members, in one round trip (queue names are
    validated config, never call data)."""
    value = await ari.get_var(
        channel_id, f"EVAL(${{QUEUE_MEMBER({queue},logged)}},${{QUEUE_MEMBER({queue},ready)}})"
    )
    logged, _, ready = (value or "").partition(",")
    return availability_from_queue(_int(logged), _int(ready))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
