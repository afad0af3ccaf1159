"""One interaction as an agent desktop pulls it: ``GET /interactions/{id}`` (docs/reports.md).

Built from the stored record alone (pure): the bot's context, the bot time, the escalation
attempts and a timeline of the call's moments, oldest first. The HTTP server reads the
record off the event loop (``web.py``) and answers with this view as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, cast

from ari_app.records import Record, stored_escalations

__all__ = ["INTERACTION_ID", "interaction_view"]

# what the app names its interactions (uuid4().hex) and the fail-open dialplan (MD5): 32
# lower-case hex characters; anything else is not looked up
INTERACTION_ID = re.compile(r"[0-9a-f]{32}")

# the record's timestamps, as moments of the timeline
_MOMENTS = (
    ("started_at", "call_started"),
    ("bot_answered_at", "bot_answered"),
    ("transfer_at", "transfer_requested"),
    ("bot_ended_at", "bot_ended"),
    ("ended_at", "call_ended"),
)
_SUMMARY = (
    "interaction_id",
    "state",
    "outcome",
    "profile",
    "caller_number",
    "dialled_number",
    "availability",
    "escalate_to",
    "queue",
    "error_reason",
    "agent_channel",
    "bot_uri",
)


def _context(record: Mapping[str, Any]) -> dict[str, str]:
    context = record.get("context")
    if isinstance(context, dict):
        return context
    text = record.get("context_json")
    decoded = json.loads(text) if isinstance(text, str) and text else {}
    return decoded if isinstance(decoded, dict) else {}


def interaction_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the agent desktop sees it (JSON-ready)."""
    escalations = stored_escalations(cast(Record, record))
    timeline: list[dict[str, Any]] = [
        {"at": record[field], "event": event}
        for field, event in _MOMENTS
        if record.get(field) is not None
    ]
    for number, attempt in enumerate(escalations, start=1):
        moments = [(attempt["queued_at"], "queued")]
        if attempt["agent_answered_at"] is not None:
            moments.append((attempt["agent_answered_at"], "agent_answered"))
        elif attempt["result"] and attempt["wait_seconds"] is not None:
            ended = attempt["queued_at"] + attempt["wait_seconds"]
            moments.append((ended, f"escalation_{attempt['result']}"))
        timeline.extend(
            {"at": at, "event": event, "queue": attempt["target"], "attempt": number}
            for at, event in moments
        )
    if not escalations and record.get("agent_answered_at") is not None:
        timeline.append({"at": record["agent_answered_at"], "event": "agent_answered"})
    timeline.sort(key=lambda moment: moment["at"])
    return {
        **{name: record.get(name) for name in _SUMMARY},
        "context": _context(record),
        "bot_seconds": record.get("bot_seconds"),
        "bot_dialogs": record.get("bot_dialogs"),
        "billable_minutes": record.get("billable_minutes"),
        "escalations": escalations,
        "timeline": timeline,
    }
