"""A report: the records that started in a period, grouped, each group summed into figures.

Pure functions over record dicts (``figures.py`` reads one record); the rates, averages and
interval of a group are defined in docs/reports.md. Nothing here formats: ``rendering.py``
and ``report_html.py`` turn a ``Report`` into text, CSV, JSON and HTML.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ari_app.records import EscalationAttempt, Record
from ari_app.reporting.figures import (
    NO_VALUE,
    OUTCOME_COLUMNS,
    billable_minutes,
    bot_seconds,
    escalation_attempts,
    first_bot_failed,
    group_key,
    outcome_of,
    timestamp,
    wilson_interval,
)
from ari_app.reporting.periods import Period, check_group_by

# escalation attempt results the queue figures count (ari_app/calls/escalation.py)
ANSWERED = "answered"
CALLER_ABANDONED = "caller_abandoned"
TOTAL_KEY = "(total)"  # parentheses cannot occur in profile or queue names


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class GroupStats:
    """The figures of one group (or of the whole period)."""

    key: str
    total: int
    outcomes: Mapping[str, int]
    escalation_targets: Mapping[str, int]
    bot_seconds: float
    bot_calls: int  # interactions with a measured bot time (answered, bot leg over)
    billable_minutes: float
    usage_minutes: Mapping[str, float]  # billable minutes by bot profile
    first_bot_failures: int = 0  # the first bot dialled did not take the call
    # escalation attempts (a caller sent to a queue) that are over, and how they ended;
    # grouped by queue, the attempts to that queue (docs/reports.md)
    queue_attempts: int = 0
    queue_answered: int = 0
    queue_abandoned: int = 0
    answer_wait_seconds: float = 0.0  # summed over the answered attempts
    # calls with an escalation attempt, and those of them an agent answered in the end
    escalated_calls: int = 0
    escalated_calls_answered: int = 0
    # calls by the carrier's caller verification (verstat; records that have one)
    verstat: Mapping[str, int] = field(default_factory=dict)

    @property
    def containment_rate(self) -> float | None:
        resolved, escalated = self.outcomes["resolved"], self.outcomes["escalated"]
        return _ratio(resolved, resolved + escalated)

    @property
    def containment_ci95(self) -> tuple[float, float] | None:
        """Wilson 95 % interval of the containment rate (docs/reports.md)."""
        resolved, escalated = self.outcomes["resolved"], self.outcomes["escalated"]
        return wilson_interval(resolved, resolved + escalated)

    @property
    def first_bot_failure_rate(self) -> float | None:
        return _ratio(self.first_bot_failures, self.total)

    @property
    def bot_failure_rate(self) -> float | None:
        return _ratio(self.outcomes["bot_failed"], self.total)

    @property
    def abandon_rate(self) -> float | None:
        return _ratio(self.outcomes["abandoned"], self.total)

    @property
    def queue_answered_rate(self) -> float | None:
        return _ratio(self.queue_answered, self.queue_attempts)

    @property
    def avg_speed_of_answer(self) -> float | None:
        """Seconds from entering the queue to an agent's answer, over the answered attempts."""
        return self.answer_wait_seconds / self.queue_answered if self.queue_answered else None

    @property
    def queue_abandon_rate(self) -> float | None:
        return _ratio(self.queue_abandoned, self.queue_attempts)

    @property
    def escalation_success_rate(self) -> float | None:
        """Of the calls with an escalation, the share an agent answered (grouped by bot:
        how well that bot's escalations end)."""
        return _ratio(self.escalated_calls_answered, self.escalated_calls)

    @property
    def avg_bot_seconds(self) -> float | None:
        return self.bot_seconds / self.bot_calls if self.bot_calls else None


def _attempt_figures(attempts: Iterable[EscalationAttempt]) -> dict[str, Any]:
    """The queue figures of some escalation attempts (those still waiting left out)."""
    closed = [a for a in attempts if a["result"] is not None]
    answered = [a for a in closed if a["result"] == ANSWERED]
    return {
        "queue_attempts": len(closed),
        "queue_answered": len(answered),
        "queue_abandoned": sum(a["result"] == CALLER_ABANDONED for a in closed),
        "answer_wait_seconds": sum(a["wait_seconds"] or 0.0 for a in answered),
    }


def summarize(
    key: str, records: Iterable[Record], attempts: Iterable[EscalationAttempt] | None = None
) -> GroupStats:
    """The figures of ``records``; the queue figures of ``attempts`` when given (grouped by
    queue: the attempts to that queue), else of the records' own attempts."""
    records = list(records)
    own = [a for r in records for a in escalation_attempts(r)]
    escalated = [r for r in records if escalation_attempts(r)]
    answered_calls = sum(
        any(a["result"] == ANSWERED for a in escalation_attempts(r)) for r in escalated
    )
    outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOME_COLUMNS, 0))
    targets: Counter[str] = Counter()
    verstat: Counter[str] = Counter()
    usage: dict[str, float] = {}
    total = bot_calls = first_failures = 0
    seconds = minutes = 0.0
    for record in records:
        total += 1
        first_failures += first_bot_failed(record)
        outcome = outcome_of(record)
        outcomes[outcome] += 1
        if outcome == "escalated":
            targets[str(record.get("escalate_to") or NO_VALUE)] += 1
        if record.get("verstat"):
            verstat[str(record.get("verstat"))] += 1
        spent = bot_seconds(record)
        if spent is not None and (record.get("bot_answered_at") is not None or spent > 0):
            seconds += spent
            bot_calls += 1
        billed = billable_minutes(record)
        minutes += billed
        if billed:
            profile = str(record.get("profile") or NO_VALUE)
            usage[profile] = usage.get(profile, 0.0) + billed
    return GroupStats(
        key=key,
        total=total,
        outcomes=dict(outcomes),
        escalation_targets=dict(targets),
        bot_seconds=seconds,
        bot_calls=bot_calls,
        billable_minutes=minutes,
        usage_minutes=usage,
        first_bot_failures=first_failures,
        escalated_calls=len(escalated),
        escalated_calls_answered=answered_calls,
        **_attempt_figures(own if attempts is None else attempts),
        verstat=dict(verstat),
    )


@dataclass(frozen=True)
class Report:
    period: Period
    group_by: str
    rows: tuple[GroupStats, ...]
    total: GroupStats


def build_report(records: Iterable[Record], period: Period, group_by: str = "day") -> Report:
    """Group the records that started inside ``period``; the others are ignored.

    Grouped by day, every day of the period has a row (zeros for a day without calls);
    grouped by profile or queue, only groups that occur have one, in name order.
    """
    check_group_by(group_by)
    start, end = period.start_ts, period.end_ts
    inside = [
        r
        for r in records
        if (ts := timestamp(r.get("started_at"))) is not None and start <= ts < end
    ]
    groups: dict[str, list[Record]] = {}
    if group_by == "day":
        groups = {day.isoformat(): [] for day in period.days()}
    for record in inside:
        groups.setdefault(group_key(record, group_by, period.tz), []).append(record)
    by_queue: dict[str, list[EscalationAttempt]] | None = None
    if group_by == "queue":  # an attempt counts for its own queue, whatever the call's last
        by_queue = {}
        for attempt in (a for r in inside for a in escalation_attempts(r)):
            by_queue.setdefault(attempt["target"], []).append(attempt)
            groups.setdefault(attempt["target"], [])
    rows = tuple(
        summarize(key, groups[key], None if by_queue is None else by_queue.get(key, []))
        for key in sorted(groups)
    )
    return Report(period, group_by, rows, summarize(TOTAL_KEY, inside))


class RecordSource(Protocol):
    def all(self) -> list[Record]: ...


def records_between(store: RecordSource, start_ts: float, end_ts: float) -> list[Record]:
    """Records started in [start_ts, end_ts): ``store.between`` where the store has one."""
    between = getattr(store, "between", None)
    if callable(between):
        return list(between(start_ts, end_ts))
    return [
        r
        for r in store.all()
        if (ts := timestamp(r.get("started_at"))) is not None and start_ts <= ts < end_ts
    ]


def report_from_store(store: RecordSource, period: Period, group_by: str = "day") -> Report:
    return build_report(records_between(store, period.start_ts, period.end_ts), period, group_by)
