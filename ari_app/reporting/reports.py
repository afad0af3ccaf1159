"""Interaction reports: pure functions over interaction record dicts.

A report covers a period of whole days in one time zone and groups the interactions that
*started* in it by day, bot profile or queue. Every figure is defined in docs/reports.md;
the functions here are the reference implementation of those definitions.

Records are plain dicts as returned by ``InteractionStore.all()`` (or ``between()``): only
``started_at``, ``outcome``, ``profile``, ``queue``, ``escalate_to``, ``bot_answered_at``,
``transfer_at``, ``bot_ended_at`` and ``ended_at`` are read, plus ``bot_seconds`` and
``billable_minutes`` when the record carries them (they win over the computed values).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ari_app.outcomes import OUTCOMES

# node: the bridge node that handled the call (several nodes share one store)
GROUP_BYS = ("day", "profile", "queue", "bot", "node")
FORMATS = ("table", "csv", "json")
PERIODS = ("previous_day", "previous_week", "previous_month", "last_7_days")
IN_PROGRESS = "in_progress"
OUTCOME_COLUMNS = (*OUTCOMES, IN_PROGRESS)
NO_VALUE = "(none)"  # a record without a queue / an escalation without a target
TOTAL_KEY = "(total)"  # parentheses cannot occur in profile or queue names
NULL_TEXT = "-"  # a rate or average that is undefined (nothing to divide by), in tables
SECONDS_PER_MINUTE = 60
# two-sided 95 % normal quantile, for the Wilson interval of the containment rate
Z_95 = 1.959964
BOT_ANSWERED = "answered"  # a bots_tried result (ari_app/calls/session.py)
SKIPPED_PREFIX = "skipped"  # bots_tried results of bots passed over undialled
# spreadsheet programs run a cell starting with one of these as a formula
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ReportError(ValueError):
    """A report request is invalid (dates, grouping, format); the message says which part."""


# -- periods -------------------------------------------------------------------------------


def timezone_named(name: str) -> tzinfo:
    """``UTC`` or an IANA zone name such as ``Europe/Paris``."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReportError(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class Period:
    """Whole days ``first_day`` .. ``last_day`` (both included) in time zone ``tz``."""

    first_day: date
    last_day: date
    tz: tzinfo = UTC

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ReportError(
                f"the period ends ({self.last_day}) before it starts ({self.first_day})"
            )

    @classmethod
    def parse(cls, first: str, last: str, tz: tzinfo = UTC) -> Period:
        """From ``YYYY-MM-DD`` strings (``--from`` / ``--to``), both days included."""
        return cls(parse_day(first, "from"), parse_day(last, "to"), tz)

    @property
    def start_ts(self) -> float:
        """Epoch seconds of the first day's local midnight (included)."""
        return _midnight(self.first_day, self.tz).timestamp()

    @property
    def end_ts(self) -> float:
        """Epoch seconds of the local midnight after the last day (excluded)."""
        return _midnight(self.last_day + timedelta(days=1), self.tz).timestamp()

    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=n) for n in range(count)]

    def contains(self, ts: float) -> bool:
        return self.start_ts <= ts < self.end_ts

    @property
    def tz_name(self) -> str:
        return str(getattr(self.tz, "key", None) or self.tz.tzname(None) or "UTC")

    def __str__(self) -> str:
        return f"{self.first_day.isoformat()} .. {self.last_day.isoformat()} ({self.tz_name})"


def named_period(name: str, now: datetime, tz: tzinfo = UTC) -> Period:
    """A period relative to ``now`` (aware or epoch-based), as used by report schedules.

    ``previous_day``: yesterday; ``previous_week``: the last complete Monday-Sunday week;
    ``previous_month``: the last complete calendar month; ``last_7_days``: the seven days
    ending yesterday.
    """
    today = now.astimezone(tz).date()
    yesterday = today - timedelta(days=1)
    if name == "previous_day":
        return Period(yesterday, yesterday, tz)
    if name == "previous_week":
        monday = today - timedelta(days=today.weekday() + 7)
        return Period(monday, monday + timedelta(days=6), tz)
    if name == "previous_month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period(last.replace(day=1), last, tz)
    if name == "last_7_days":
        return Period(today - timedelta(days=7), yesterday, tz)
    raise ReportError(f"unknown period {name!r}; use one of {', '.join(PERIODS)}")


# --last / --since durations: a number and a unit
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, what: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` or ``2w`` as a timedelta (a positive whole number + unit)."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ReportError(
            f"{what} must be a positive number followed by m, h, d or w (e.g. 7d), got {text!r}"
        )
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def last_period(text: str, now: datetime, tz: tzinfo = UTC) -> Period:
    """The whole days that the last ``text`` (``24h``, ``7d``...) up to ``now`` touch.

    ``7d`` is today and the six days before it; ``24h`` is yesterday and today.
    """
    span = parse_duration(text, "--last")
    local = now.astimezone(tz)
    last = local.date()
    if text.strip()[-1:] in ("d", "w"):  # whole days: 7d is a week ending today
        return Period(last - span + timedelta(days=1), last, tz)
    return Period((local - span).date(), last, tz)


def parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(f"{what} must be a date as YYYY-MM-DD, got {text!r}") from exc


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


# -- one record ----------------------------------------------------------------------------


def _ts(value: Any) -> float | None:
    """An epoch-seconds column (a float, or a datetime from an ORM store)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def outcome_of(record: Mapping[str, Any]) -> str:
    """The record's outcome; ``in_progress`` while none is decided yet."""
    outcome = record.get("outcome")
    if outcome is None:
        return IN_PROGRESS
    # the store only accepts OUTCOMES; anything else is counted as an error
    return outcome if outcome in OUTCOMES else "error"


def bot_seconds(record: Mapping[str, Any]) -> float | None:
    """Seconds the caller was connected to the bot; None if unknown (no bot, still talking).

    The record's own ``bot_seconds`` wins. Otherwise: from ``bot_answered_at`` to the bot's
    transfer request (``transfer_at``) or, without one, to the end of the bot leg
    (``bot_ended_at``) or of the call (``ended_at``).
    """
    given = record.get("bot_seconds")
    if given is not None:
        return max(0.0, float(given))
    answered = _ts(record.get("bot_answered_at"))
    if answered is None:
        return None
    end = next(
        (
            ts
            for ts in map(_ts, (record.get(k) for k in ("transfer_at", "bot_ended_at", "ended_at")))
            if ts is not None
        ),
        None,
    )
    if end is None:
        return None
    return max(0.0, end - answered)


def billable_minutes(record: Mapping[str, Any]) -> float:
    """The record's ``billable_minutes`` (the store may round differently, e.g. to 6 s),
    else each started minute of bot time, the seconds rounded to the millisecond first so
    that 60.0004 s is one minute."""
    given = record.get("billable_minutes")
    if given is not None:
        return max(0.0, float(given))
    seconds = bot_seconds(record) or 0.0
    return float(math.ceil(round(seconds, 3) / SECONDS_PER_MINUTE))


def group_key(record: Mapping[str, Any], group_by: str, tz: tzinfo = UTC) -> str:
    if group_by == "day":
        started = _ts(record.get("started_at"))
        if started is None:
            return NO_VALUE
        return datetime.fromtimestamp(started, tz).date().isoformat()
    if group_by == "profile":
        return str(record.get("profile") or NO_VALUE)
    if group_by == "queue":
        return str(record.get("queue") or NO_VALUE)
    if group_by == "bot":
        first = first_bot_attempt(record)
        return first[0] if first else str(record.get("bot_uri") or NO_VALUE)
    if group_by == "node":
        return str(record.get("node") or NO_VALUE)
    raise ReportError(f"group_by must be one of {', '.join(GROUP_BYS)}, got {group_by!r}")


def bots_tried(record: Mapping[str, Any]) -> list[tuple[str, str | None]]:
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


def first_bot_attempt(record: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The first bot actually dialled (the A/B arm the call was assigned to)."""
    return next(
        (a for a in bots_tried(record) if not (a[1] or "").startswith(SKIPPED_PREFIX)), None
    )


def first_bot_failed(record: Mapping[str, Any]) -> bool:
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


# -- aggregation ---------------------------------------------------------------------------


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "total": self.total,
            "outcomes": dict(self.outcomes),
            "containment_rate": _round(self.containment_rate, 4),
            "containment_ci95": _interval(self.containment_ci95),
            "bot_failure_rate": _round(self.bot_failure_rate, 4),
            "first_bot_failures": self.first_bot_failures,
            "first_bot_failure_rate": _round(self.first_bot_failure_rate, 4),
            "abandon_rate": _round(self.abandon_rate, 4),
            "escalation_targets": dict(_ranked(self.escalation_targets)),
            "avg_bot_seconds": _round(self.avg_bot_seconds, 1),
            "bot_seconds": round(self.bot_seconds, 1),
            "billable_minutes": minutes_value(self.billable_minutes),
            "usage_minutes_by_profile": {
                k: minutes_value(v) for k, v in sorted(self.usage_minutes.items())
            },
        }


def summarize(key: str, records: Iterable[Mapping[str, Any]]) -> GroupStats:
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.period.first_day.isoformat(),
            "to": self.period.last_day.isoformat(),
            "timezone": self.period.tz_name,
            "group_by": self.group_by,
            "rows": [row.as_dict() for row in self.rows],
            "total": self.total.as_dict(),
        }


def build_report(
    records: Iterable[Mapping[str, Any]], period: Period, group_by: str = "day"
) -> Report:
    """Group the records that started inside ``period``; the others are ignored.

    Grouped by day, every day of the period has a row (zeros for a day without calls);
    grouped by profile or queue, only groups that occur have one, in name order.
    """
    if group_by not in GROUP_BYS:
        raise ReportError(f"group_by must be one of {', '.join(GROUP_BYS)}, got {group_by!r}")
    start, end = period.start_ts, period.end_ts
    inside = [
        r for r in records if (ts := _ts(r.get("started_at"))) is not None and start <= ts < end
    ]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    if group_by == "day":
        groups = {day.isoformat(): [] for day in period.days()}
    for record in inside:
        groups.setdefault(group_key(record, group_by, period.tz), []).append(record)
    rows = tuple(summarize(key, groups[key]) for key in sorted(groups))
    return Report(period, group_by, rows, summarize(TOTAL_KEY, inside))


class RecordSource(Protocol):
    def all(self) -> list[dict[str, Any]]: ...


def records_between(store: RecordSource, start_ts: float, end_ts: float) -> list[dict[str, Any]]:
    """Records started in [start_ts, end_ts): ``store.between`` where the store has one."""
    between = getattr(store, "between", None)
    if callable(between):
        return list(between(start_ts, end_ts))
    return [
        r
        for r in store.all()
        if (ts := _ts(r.get("started_at"))) is not None and start_ts <= ts < end_ts
    ]


def report_from_store(store: RecordSource, period: Period, group_by: str = "day") -> Report:
    return build_report(records_between(store, period.start_ts, period.end_ts), period, group_by)


# -- formats -------------------------------------------------------------------------------


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _interval(value: tuple[float, float] | None) -> list[float] | None:
    return None if value is None else [round(value[0], 4), round(value[1], 4)]


def _interval_text(value: tuple[float, float] | None) -> str:
    if value is None:
        return NULL_TEXT
    return f"{value[0] * 100:.0f}-{value[1] * 100:.0f}%"


def minutes_value(minutes: float) -> int | float:
    """Whole minutes as an int, otherwise to the hundredth (6-second billing gives 1.3)."""
    rounded = round(minutes, 2)
    return int(rounded) if rounded.is_integer() else rounded


def _minutes_text(minutes: float) -> str:
    return str(minutes_value(minutes))


def _ranked(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _pairs(counts: Mapping[str, int]) -> str:
    return ";".join(f"{name}={count}" for name, count in _ranked(counts))


def _usage(usage: Mapping[str, float]) -> str:
    return ";".join(f"{name}={_minutes_text(m)}" for name, m in sorted(usage.items()))


def _percent(value: float | None) -> str:
    return NULL_TEXT if value is None else f"{value * 100:.1f}%"


def _number(value: float | None, digits: int) -> str:
    return NULL_TEXT if value is None else f"{value:.{digits}f}"


def csv_columns(group_by: str) -> list[str]:
    return [
        group_by,
        "total",
        *OUTCOME_COLUMNS,
        "containment_rate",
        "containment_ci95_low",
        "containment_ci95_high",
        "bot_failure_rate",
        "first_bot_failures",
        "first_bot_failure_rate",
        "abandon_rate",
        "avg_bot_seconds",
        "bot_seconds",
        "billable_minutes",
        "escalation_targets",
        "usage_minutes_by_profile",
    ]


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # escalation targets come from the bots: never let a spreadsheet evaluate one
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def render_csv(report: Report) -> str:
    """One row per group, then the ``(total)`` row; undefined rates are empty cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(csv_columns(report.group_by))
    for row in (*report.rows, report.total):
        writer.writerow(
            _csv_cell(v)
            for v in (
                row.key,
                row.total,
                *(row.outcomes[o] for o in OUTCOME_COLUMNS),
                _round(row.containment_rate, 4),
                *(_interval(row.containment_ci95) or (None, None)),
                _round(row.bot_failure_rate, 4),
                row.first_bot_failures,
                _round(row.first_bot_failure_rate, 4),
                _round(row.abandon_rate, 4),
                _round(row.avg_bot_seconds, 1),
                round(row.bot_seconds, 1),
                _minutes_text(row.billable_minutes),
                _pairs(row.escalation_targets),
                _usage(row.usage_minutes),
            )
        )
    return out.getvalue()


def render_json(report: Report) -> str:
    """The report as JSON; undefined rates and averages are ``null``."""
    return json.dumps(report.as_dict(), indent=2) + "\n"


TABLE_HEADERS = (
    "total",
    "resolved",
    "escalated",
    "bot_failed",
    "abandoned",
    "error",
    "overload",
    "bypass",
    "in_prog",
    "contain",
    "contain_95ci",
    "bot_fail",
    "1st_bot_fail",
    "abandon",
    "avg_bot_s",
    "bot_min",
    "escalation targets",
)


def table_cells(row: GroupStats) -> list[str]:
    return [
        row.key,
        str(row.total),
        *(str(row.outcomes[o]) for o in OUTCOME_COLUMNS),
        _percent(row.containment_rate),
        _interval_text(row.containment_ci95),
        _percent(row.bot_failure_rate),
        _percent(row.first_bot_failure_rate),
        _percent(row.abandon_rate),
        _number(row.avg_bot_seconds, 1),
        _minutes_text(row.billable_minutes),
        _pairs(row.escalation_targets).replace(";", " ") or NULL_TEXT,
    ]


def render_table(report: Report) -> str:
    """Fixed-width text for a terminal or an email body."""
    header = [report.group_by, *TABLE_HEADERS]
    lines = [table_cells(row) for row in (*report.rows, report.total)]
    widths = [max(len(r[i]) for r in (header, *lines)) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        # first and last columns are text (left-aligned), the figures are right-aligned
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        parts.append(cells[-1])
        return "  ".join(parts).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    body = [fmt(header), rule, *(fmt(c) for c in lines[:-1]), rule, fmt(lines[-1])]
    usage = _usage(report.total.usage_minutes).replace(";", ", ") or NULL_TEXT
    return (
        f"Interaction report {report.period}, grouped by {report.group_by}\n\n"
        + "\n".join(body)
        + f"\n\nBot usage (billable minutes) by profile: {usage}\n"
    )


def render(report: Report, fmt: str) -> str:
    if fmt == "table":
        return render_table(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    raise ReportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
