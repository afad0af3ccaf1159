"""The cron matcher used by report schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ari_app.config.cron import CronError, CronSchedule

PARIS = ZoneInfo("Europe/Paris")
# Wednesday 8 May 2024, 07:00
WED_0700 = datetime(2024, 5, 8, 7, 0)

MATCH_CASES = [
    ("0 7 * * *", WED_0700, True),
    ("0 7 * * *", WED_0700.replace(minute=1), False),
    ("0 7 * * *", WED_0700.replace(hour=19), False),
    ("* * * * *", datetime(2031, 12, 31, 23, 59), True),
    ("*/15 * * * *", WED_0700.replace(minute=45), True),
    ("*/15 * * * *", WED_0700.replace(minute=50), False),
    ("5/20 * * * *", WED_0700.replace(minute=45), True),  # 5, 25, 45
    ("5/20 * * * *", WED_0700.replace(minute=5), True),
    ("5/20 * * * *", WED_0700.replace(minute=20), False),
    ("10-20/5 * * * *", WED_0700.replace(minute=15), True),
    ("10-20/5 * * * *", WED_0700.replace(minute=25), False),
    ("0,30 8-17 * * *", WED_0700.replace(hour=12, minute=30), True),
    ("0,30 8-17 * * *", WED_0700.replace(hour=18, minute=30), False),
    ("0 7 * * 1-5", WED_0700, True),
    ("0 7 * * 1-5", datetime(2024, 5, 11, 7, 0), False),  # Saturday
    ("0 7 * * mon-fri", WED_0700, True),
    ("0 7 * * sat,sun", datetime(2024, 5, 12, 7, 0), True),  # Sunday
    ("0 7 * * 0", datetime(2024, 5, 12, 7, 0), True),  # Sunday as 0
    ("0 7 * * 7", datetime(2024, 5, 12, 7, 0), True),  # Sunday as 7
    ("0 7 * * 7", datetime(2024, 5, 13, 7, 0), False),
    ("0 7 1 * *", datetime(2024, 6, 1, 7, 0), True),
    ("0 7 1 * *", datetime(2024, 6, 2, 7, 0), False),
    ("0 7 * jan,jul *", datetime(2024, 7, 3, 7, 0), True),
    ("0 7 * JAN *", datetime(2024, 2, 3, 7, 0), False),
    ("0 7 1 1 *", datetime(2025, 1, 1, 7, 0), True),
    # day of month and day of week both restricted: either one matches
    ("0 7 1 * mon", datetime(2024, 5, 6, 7, 0), True),  # a Monday, not the 1st
    ("0 7 1 * mon", datetime(2024, 5, 1, 7, 0), True),  # the 1st, a Wednesday
    ("0 7 1 * mon", datetime(2024, 5, 7, 7, 0), False),
    # a step on '*' still counts as unrestricted: both must match
    ("0 7 */2 * mon", datetime(2024, 5, 6, 7, 0), False),  # Monday the 6th (even)
    ("0 7 */2 * mon", datetime(2024, 5, 13, 7, 0), True),  # Monday the 13th
    ("@daily", datetime(2024, 5, 8, 0, 0), True),
    ("@midnight", datetime(2024, 5, 8, 0, 1), False),
    ("@hourly", datetime(2024, 5, 8, 13, 0), True),
    ("@weekly", datetime(2024, 5, 12, 0, 0), True),
    ("@monthly", datetime(2024, 5, 1, 0, 0), True),
    ("@yearly", datetime(2024, 1, 1, 0, 0), True),
    ("@annually", datetime(2024, 1, 2, 0, 0), False),
    ("  0   7 * *  * ", WED_0700, True),
]


@pytest.mark.parametrize(("expression", "moment", "expected"), MATCH_CASES)
def test_matches(expression: str, moment: datetime, expected: bool) -> None:
    assert CronSchedule.parse(expression).matches(moment) is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 7 * *", "5 fields"),
        ("0 7 * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("* * 0 * *", "Bad day-of-month"),
        ("* * * 13 *", "Bad month"),
        ("* * * * 8", "Bad day-of-week"),
        ("*/0 * * * *", "Bad minute"),
        ("*/x * * * *", "Bad minute"),
        ("20-10 * * * *", "Bad minute"),
        ("1,,2 * * * *", "Bad minute"),
        ("a * * * *", "Bad minute"),
        ("* * * foo *", "Bad month"),
        ("-1 * * * *", "Bad minute"),
        ("0 0 31 2 *", "Bad day-of-month"),  # never fires
        ("@reboot", "5 fields"),
    ],
)
def test_parse_errors(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace("*", r"\*")):
        CronSchedule.parse(expression)


NEXT_CASES = [
    ("0 7 * * *", datetime(2024, 5, 8, 6, 59), datetime(2024, 5, 8, 7, 0)),
    ("0 7 * * *", datetime(2024, 5, 8, 7, 0), datetime(2024, 5, 9, 7, 0)),  # strictly after
    ("0 7 * * *", datetime(2024, 5, 8, 7, 0, 30), datetime(2024, 5, 9, 7, 0)),
    ("0 7 * * *", datetime(2024, 12, 31, 8, 0), datetime(2025, 1, 1, 7, 0)),
    ("*/15 * * * *", datetime(2024, 5, 8, 7, 1), datetime(2024, 5, 8, 7, 15)),
    ("0 7 * * mon", datetime(2024, 5, 8, 7, 0), datetime(2024, 5, 13, 7, 0)),
    ("0 0 1 * *", datetime(2024, 1, 31, 12, 0), datetime(2024, 2, 1, 0, 0)),
    ("0 0 31 * *", datetime(2024, 4, 1, 0, 0), datetime(2024, 5, 31, 0, 0)),  # April has 30
    ("0 0 29 2 *", datetime(2024, 3, 1, 0, 0), datetime(2028, 2, 29, 0, 0)),
    ("30 23 * dec *", datetime(2024, 5, 8, 0, 0), datetime(2024, 12, 1, 23, 30)),
]


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 7 * * *", "At 07:00 every day"),
        ("0 7 * * mon", "At 07:00 on Monday"),
        ("@hourly", "At the start of every hour"),
    ],
)
def test_explain_in_words(expression: str, words: str) -> None:
    assert CronSchedule.parse(expression).explain() == words


@pytest.mark.parametrize(("expression", "after", "expected"), NEXT_CASES)
def test_next_after(expression: str, after: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(after) == expected


BERLIN = ZoneInfo("Europe/Berlin")


def _firings(expression: str, first: datetime, minutes: int) -> list[str]:
    """Every minute in which the schedule fires, walked minute by minute as instants."""
    schedule = CronSchedule.parse(expression)
    fired = []
    instant = first.astimezone(UTC)
    for _ in range(minutes):
        local = instant.astimezone(first.tzinfo)
        if schedule.matches(local):
            fired.append(local.isoformat())
        instant += timedelta(minutes=1)
    return fired


def test_a_time_in_the_spring_forward_gap_is_not_skipped() -> None:
    # 29 March 2026 in Berlin: 02:00-02:59 do not exist; cron fires right after the jump
    after = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    upcoming = CronSchedule.parse("30 2 * * *").next_after(after)
    assert upcoming.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert upcoming.tzinfo is BERLIN
    day = datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN)
    assert _firings("30 2 * * *", day, 24 * 60) == ["2026-03-29T03:00:00+02:00"]


def test_a_repeated_time_in_the_fall_back_hour_fires_once() -> None:
    day = datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)
    assert _firings("30 2 * * *", day, 25 * 60) == ["2026-10-25T02:30:00+02:00"]
    # an hourly job runs in both 02:xx hours, as cron does
    assert _firings("15 * * * *", day, 25 * 60)[2:4] == [
        "2026-10-25T02:15:00+02:00",
        "2026-10-25T02:15:00+01:00",
    ]


def test_next_after_keeps_the_time_zone() -> None:
    daily = CronSchedule.parse("0 7 * * *").next_after(datetime(2024, 3, 30, 12, 0, tzinfo=PARIS))
    assert daily.astimezone(UTC) == datetime(2024, 3, 31, 5, 0, tzinfo=UTC)  # 07:00 CEST


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["0 7 * * *", "*/5 * * * *", "15 8-17 * * 1-5", "0 0 1,15 * *", "0 6 * * 0"]),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
)
def test_next_after_is_the_first_match(expression: str, after: datetime) -> None:
    schedule = CronSchedule.parse(expression)
    upcoming = schedule.next_after(after)
    assert upcoming > after
    assert schedule.matches(upcoming)
    assert upcoming.second == 0 and upcoming.microsecond == 0
    # nothing in between matches (checked minute by minute over at most a day)
    probe = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(min(1440, int((upcoming - probe).total_seconds() // 60))):
        assert not schedule.matches(probe)
        probe += timedelta(minutes=1)
