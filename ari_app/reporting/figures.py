"""The figures of one interaction record, as docs/reports.md defines them.

Records are :class:`~ari_app.records.Record` dicts as ``InteractionStore.all()`` (or
``between()``) returns them: only
``started_at``, ``outcome``, ``profile``, ``queue``, ``escalate_to``, ``bot_answered_at``,
``transfer_at``, ``bot_ended_at``, ``ended_at``, ``bots_tried``, ``bot_uri`` and ``node``
are read, plus ``bot_seconds`` and ``billable_minutes`` when the record carries them (they
win over the computed values). Bot time and billable minutes are computed by
ari_app/records/billing.py, as for the calls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo

from ari_app.outcomes import OUTCOMES
from ari_app.records import EscalationAttempt, Record, billing, stored_escalations
from ari_app.reporting.periods import check_group_by

IN_PROGRESS = "in_progress"
OUTCOME_COLUMNS = (*OUTCOMES, IN_PROGRESS)
NO_VALUE = "(none)"  # a record without a queue / an escalation without a target
# two-sided 95 % normal quantile, for the Wilson interval of the containment rate
Z_95 = 1.959964
BOT_ANSWERED = "answered"  # a bots_tried result (ari_app/calls/session.py)
SKIPPED_PREFIX = "skipped"  # bots_tried results of bots passed over undialled


timestamp = billing.epoch_seconds
# a record's bot time and billable minutes: computed as for the calls (ari_app/records/billing.py)
bot_seconds = billing.record_bot_seconds
billable_minutes = billing.record_billable_minutes


def outcome_of(record: Record) -> str:
    """The record's outcome; ``in_progress`` while none is decided yet."""
    outcome = record.get("outcome")
    if outcome is None:
        return IN_PROGRESS
    # the store only accepts OUTCOMES; anything else is counted as an error
    return outcome if outcome in OUTCOMES else "error"


def group_key(record: Record, group_by: str, tz: tzinfo = UTC) -> str:
    check_group_by(group_by)
    if group_by == "day":
        started = timestamp(record.get("started_at"))
        if started is None:
            return NO_VALUE
        return datetime.fromtimestamp(started, tz).date().isoformat()
    if group_by == "bot":
        first = first_bot_attempt(record)
        return first[0] if first else str(record.get("bot_uri") or NO_VALUE)
    # profile, queue, node, agent: the column of that name
    return str(record.get(group_by) or NO_VALUE)


def bots_tried(record: Record) -> list[tuple[str, str | None]]:
    """The record's bot attempts in order, (uri, result): ``answered``, a failure such as
    ``bot_busy``, ``skipped_...`` for a bot passed over, None while in progress or when the
    caller hung up meanwhile. Empty for a record without any (an older record, a shed call)."""
    value = record.get("bots_tried")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    attempts = []
    for item in value:
        if isinstance(item, Mapping) and isinstance(item.get("uri"), str):
            result = item.get("result")
            attempts.append((item["uri"], result if isinstance(result, str) else None))
    return attempts


def escalation_attempts(record: Record) -> list[EscalationAttempt]:
    """The record's escalation attempts in order (the queue, its result, the wait); empty
    for a record without any (no escalation, or an older record)."""
    return stored_escalations(record)


def first_bot_attempt(record: Record) -> tuple[str, str | None] | None:
    """The first bot actually dialled (the A/B arm the call was assigned to)."""
    return next(
        (a for a in bots_tried(record) if not (a[1] or "").startswith(SKIPPED_PREFIX)), None
    )


def first_bot_failed(record: Record) -> bool:
    """The first bot dialled did not take the call (another bot or the fallback queue did)."""
    first = first_bot_attempt(record)
    return first is not None and first[1] not in {None, BOT_ANSWERED}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (95 % by default); None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
