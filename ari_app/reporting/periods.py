"""What a report request names: its period of whole days in a time zone, and its grouping.

Pure parsers and checks. The names the configuration checks ``[reports]`` and
``[[report_schedules]]`` with (period and grouping names, time zones) are defined in
``config/schedule_names.py``, which imports nothing above it, and re-exported here.

A period's size is checked by arithmetic on its two days before anything is built for it,
and its bounds must be representable as epoch seconds (``date.max`` has no midnight after
it): a bad request is a ``ReportError`` with a message, never an ``OverflowError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

from ari_app.config.schedule_names import GROUP_BYS as GROUP_BYS
from ari_app.config.schedule_names import PERIODS as PERIODS
from ari_app.config.schedule_names import ReportError as ReportError
from ari_app.config.schedule_names import timezone_named as timezone_named

# ten years: a bound on the work one report request can ask for (docs/reports.md)
MAX_PERIOD_DAYS = 3660


def check_group_by(group_by: str) -> str:
    if group_by not in GROUP_BYS:
        raise ReportError(f"group_by must be one of {', '.join(GROUP_BYS)}, got {group_by!r}")
    return group_by


@dataclass(frozen=True)
class Period:
    """Whole days ``first_day`` .. ``last_day`` (both included) in time zone ``tz``.

    At most ``MAX_PERIOD_DAYS`` days, checked from the two dates alone; both bounds are
    computed (and checked) when the period is made.
    """

    first_day: date
    last_day: date
    tz: tzinfo = UTC
    start_ts: float = field(init=False, repr=False, compare=False)
    end_ts: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ReportError(
                f"the period ends ({self.last_day}) before it starts ({self.first_day})"
            )
        if (self.last_day - self.first_day).days >= MAX_PERIOD_DAYS:
            raise ReportError(f"the period is longer than {MAX_PERIOD_DAYS} days")
        # epoch seconds of the first day's local midnight (included) and of the local
        # midnight after the last day (excluded)
        object.__setattr__(self, "start_ts", _midnight_ts(self.first_day, self.tz, "from"))
        object.__setattr__(self, "end_ts", _midnight_ts(self.last_day, self.tz, "to", after=True))

    @classmethod
    def parse(cls, first: str, last: str, tz: tzinfo = UTC) -> Period:
        """From ``YYYY-MM-DD`` strings (``--from`` / ``--to``), both days included."""
        return cls(parse_day(first, "from"), parse_day(last, "to"), tz)

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
    problem = f"{what} must be a positive number followed by m, h, d or w (e.g. 7d), got {text!r}"
    if match is None or int(match.group(1)) == 0:
        raise ReportError(problem)
    try:
        return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError as exc:
        raise ReportError(f"{what} is out of range, got {text!r}") from exc


def last_period(text: str, now: datetime, tz: tzinfo = UTC) -> Period:
    """The whole days that the last ``text`` (``24h``, ``7d``...) up to ``now`` touch.

    ``7d`` is today and the six days before it; ``24h`` is yesterday and today.
    """
    span = parse_duration(text, "--last")
    local = now.astimezone(tz)
    last = local.date()
    try:
        if text.strip()[-1:] in ("d", "w"):  # whole days: 7d is a week ending today
            return Period(last - span + timedelta(days=1), last, tz)
        return Period((local - span).date(), last, tz)
    except OverflowError as exc:
        raise ReportError(f"--last {text} reaches before the first representable day") from exc


def parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(f"{what} must be a date as YYYY-MM-DD, got {text!r}") from exc


def _midnight_ts(day: date, tz: tzinfo, what: str, *, after: bool = False) -> float:
    """Epoch seconds of ``day``'s local midnight (``after``: of the next day's)."""
    try:
        midnight = day + timedelta(days=1) if after else day
        return datetime(midnight.year, midnight.month, midnight.day, tzinfo=tz).timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        raise ReportError(f"{what} ({day.isoformat()}) is out of range") from exc
