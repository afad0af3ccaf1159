"""Webhook events: what the record writer puts into the outbox, and in which form.

An event is made when a record change sets an ``outcome`` that ``[webhooks] outcomes``
names (by default only ``escalated``). Its body is built from the whole record as the same
transaction leaves it, serialised once, and stored: the bytes the sender signs and POSTs are
the bytes written here, whatever happens to the record later. docs/webhooks.md describes the
fields.
"""

from __future__ import annotations

import json

from ari_app.records import TIMESTAMP_FIELDS, Record, stored_escalations

__all__ = ["EVENT_VERSION", "TIMESTAMP_FIELDS", "event_body", "event_id"]

# the "version" field of every body; a receiver can tell a layout change by it
EVENT_VERSION = 1


def event_id(interaction_id: str, outcome: str) -> str:
    """One event per interaction and outcome: the same change written twice is one event."""
    return f"{interaction_id}.{outcome}"


def event_body(record: Record, outcome: str, created_at: float) -> str:
    """The JSON body of the event for ``record`` reaching ``outcome`` (compact, key-sorted);
    its "timestamps" are the record's ``TIMESTAMP_FIELDS`` (Unix seconds, or null when not
    reached)."""
    context_json = record.get("context_json")
    context = json.loads(context_json) if context_json else None
    bot_headers = record.get("bot_headers")
    body = {
        "version": EVENT_VERSION,
        "event_id": event_id(record["interaction_id"], outcome),
        "event": f"interaction.{outcome}",
        "created_at": created_at,
        "interaction_id": record["interaction_id"],
        "outcome": outcome,
        "profile": record.get("profile"),
        "caller_number": record.get("caller_number"),
        "dialled_number": record.get("dialled_number"),
        "queue": record.get("queue"),
        "escalate_to": record.get("escalate_to"),
        "context": context,
        "bot_headers": json.loads(bot_headers) if bot_headers else None,
        "reason": record.get("error_reason"),
        # every time the caller was sent to a queue, with its result so far
        "escalations": stored_escalations(record),
        "node": record.get("node"),
        "timestamps": {name: record.get(name) for name in TIMESTAMP_FIELDS},
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
