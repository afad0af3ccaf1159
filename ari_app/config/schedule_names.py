"""The report names the configuration checks: periods, groupings and time zones.

A leaf (it imports nothing of the app's): ``[[report_schedules]]`` and ``[reports]`` are
checked at load with these, and ``ari_app.reporting`` imports them from here.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# node: the bridge node that handled the call (several nodes share one store)
GROUP_BYS = ("day", "profile", "queue", "bot", "node", "agent")
PERIODS = ("previous_day", "previous_week", "previous_month", "last_7_days")


class ReportError(ValueError):
    """A report request is invalid (dates, grouping, format); the message says which part."""


def timezone_named(name: str) -> tzinfo:
    """``UTC`` or an IANA zone name such as ``Europe/Paris``."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReportError(f"unknown time zone {name!r}") from exc
