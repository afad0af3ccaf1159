"""The interaction record: its fields and their types, in one place (docs/records.md).

One record per call. ``RecordChange`` is a change of some of its columns, as the call
sessions and reconciliation queue them for the record writer (ari_app/store/writer.py);
``Record`` is a whole record as the store reads it back, shared by the store, the webhook
outbox, reconciliation and the reports. Both are typed dicts: a misspelt field, written
or read, is a ``mypy`` error, not a log line. The store's table has exactly these columns
(tests/store/test_store_backends.py checks it).

Why typed dicts: docs/decisions.md (z). A leaf of the package: it imports nothing of the
app but the outcomes, so that the call handling, the store and the reports can all share it.
"""

from __future__ import annotations

import json
from typing import TypedDict, cast

__all__ = [
    "FIELDS",
    "TIMESTAMP_FIELDS",
    "BotAttempt",
    "EscalationAttempt",
    "Record",
    "RecordChange",
    "stored_escalations",
]


class BotAttempt(TypedDict):
    """One entry of ``bots_tried``: a bot dialled or passed over, and what came of it."""

    uri: str
    result: str | None


class EscalationAttempt(TypedDict):
    """One entry of ``escalations``: a time the caller was sent to a queue, and what came of
    it (ari_app/calls/escalation.py names the results)."""

    target: str  # the queue
    via: str  # refer, bye, bot_failed, fault, overflow: what sent the caller there
    queued_at: float
    result: str | None  # answered, timeout, no_agents, full, caller_abandoned; None: waiting
    wait_seconds: float | None  # queued_at -> the answer, the failure or the hang-up
    agent_answered_at: float | None


class _Columns(TypedDict, total=False):
    """The columns written and read back alike (timestamps are Unix epoch seconds)."""

    node: str | None
    state: str
    outcome: str | None
    profile: str
    dialled_number: str | None
    caller_number: str | None
    caller_channel: str
    bot_channel: str | None
    agent_channel: str | None
    # the [agents] name (or [external_targets] name) of who answered; the channel's
    # endpoint for any other member
    agent: str | None
    availability: str | None
    escalate_to: str | None
    queue: str | None
    error_reason: str | None
    started_at: float
    bot_answered_at: float | None
    transfer_at: float | None
    queued_at: float | None
    agent_answered_at: float | None
    bot_ended_at: float | None
    ended_at: float | None
    reconciled_at: float | None
    bot_seconds: float | None
    billable_minutes: float | None
    billing_rounding: str | None
    bot_uri: str | None
    bot_dialogs: int | None  # bot dialogs of the call that were answered (billed)
    # the carrier's caller verification (ari_app/sip/headers.py): a verstat verdict,
    # "absent" or "unrecognised"; None when the dialplan passed no headers
    verstat: str | None


class RecordChange(_Columns, total=False):
    """The columns a change may set (the store sets ``interaction_id`` and ``updated_at``);
    the bot's context and the bot attempts as values, stored as their JSON text."""

    context_json: dict[str, str] | None
    bots_tried: list[BotAttempt] | None
    escalations: list[EscalationAttempt] | None
    bot_headers: dict[str, str] | None


class Record(_Columns, total=False):
    """A stored record: every column (the JSON ones as their text), plus ``context``
    decoded from ``context_json`` when there is one."""

    interaction_id: str
    updated_at: float
    context_json: str | None
    bots_tried: str | None
    escalations: str | None
    bot_headers: str | None
    context: dict[str, str]


# the columns a change may name, in the table's order
FIELDS: frozenset[str] = frozenset(RecordChange.__annotations__)
# the timestamps of a call's course, in the order they are reached
TIMESTAMP_FIELDS = (
    "started_at",
    "bot_answered_at",
    "transfer_at",
    "queued_at",
    "agent_answered_at",
    "bot_ended_at",
    "ended_at",
)

_ATTEMPT_KEYS = frozenset(EscalationAttempt.__annotations__)


def stored_escalations(record: Record) -> list[EscalationAttempt]:
    """The attempts of a stored record (its ``escalations`` JSON text); [] without any, and
    entries that are not attempts are left out."""
    text = record.get("escalations")
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [
        cast(EscalationAttempt, a) for a in value if isinstance(a, dict) and set(a) == _ATTEMPT_KEYS
    ]
