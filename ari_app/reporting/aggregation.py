"""A report: the records that started in a period, grouped, each group summed into figures.

Pure functions over record dicts (``figures.py`` reads one record); the rates, averages and
interval of a group are defined in docs/reports.md. Nothing here formats: ``rendering.py``
and ``report_html.py`` turn a ``Report`` into text, CSV, JSON and HTML.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ari_app.records import Record
from ari_app.reporting.figures import (
    NO_VALUE,
    OUTCOME_COLUMNS,
    billable_minutes,
    bot_seconds,
    first_bot_failed,
    group_key,
    outcome_of,
    timestamp,
    wilson_interval,
)
from ari_app.reporting.periods import Period, check_group_by

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
    def avg_bot_seconds(self) -> float | None:
        return self.bot_seconds / self.bot_calls if self.bot_calls else None


def summarize(key: str, records: Iterable[Record]) -> GroupStats:
    outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOME_COLUMNS, 0))
    targets: Counter[str] = Counter()
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
    rows = tuple(summarize(key, groups[key]) for key in sorted(groups))
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
