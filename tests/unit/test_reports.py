"""Reports over interaction records: every definition table-driven, then properties."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ari_app.outcomes import OUTCOMES
from ari_app.records import Record, RecordChange
from ari_app.reporting.aggregation import (
    TOTAL_KEY,
    GroupStats,
    build_report,
    records_between,
    summarize,
)
from ari_app.reporting.figures import (
    IN_PROGRESS,
    NO_VALUE,
    OUTCOME_COLUMNS,
    billable_minutes,
    bot_seconds,
    group_key,
    outcome_of,
    wilson_interval,
)
from ari_app.reporting.periods import (
    GROUP_BYS,
    MAX_PERIOD_DAYS,
    Period,
    ReportError,
    last_period,
    named_period,
    timezone_named,
)
from ari_app.reporting.rendering import (
    csv_columns,
    group_dict,
    render,
    render_csv,
    render_json,
    render_table,
)
from ari_app.reporting.report_html import report_summary
from tests.records import create

PARIS = ZoneInfo("Europe/Paris")
MAY_1 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


def rec(outcome: str | None = "resolved", at: float = MAY_1, **fields: Any) -> Record:
    """A record as the store returns it; the bot answers 2 s in unless told otherwise."""
    record: dict[str, Any] = {
        "interaction_id": f"i{at}-{outcome}-{sorted(fields.items())}",
        "state": outcome or "bot_connected",
        "outcome": outcome,
        "profile": "default",
        "queue": None,
        "escalate_to": None,
        "started_at": at,
        "bot_answered_at": at + 2,
        "transfer_at": None,
        "queued_at": None,
        "ended_at": at + 32 if outcome else None,
    }
    record.update(fields)
    return cast(Record, record)


# -- one record ----------------------------------------------------------------------------

BOT_SECONDS_CASES = [
    ("never answered", {"bot_answered_at": None, "ended_at": 100.0}, None),
    ("answered, then hung up", {"bot_answered_at": 10.0, "ended_at": 70.5}, 60.5),
    (
        "transfer ends the bot part",
        {"bot_answered_at": 10.0, "transfer_at": 40.0, "ended_at": 400.0},
        30.0,
    ),
    (
        "bot leg end before the call end",
        {"bot_answered_at": 10.0, "bot_ended_at": 25.0, "ended_at": 400.0},
        15.0,
    ),
    (
        "transfer wins over bot leg end",
        {"bot_answered_at": 10.0, "transfer_at": 20.0, "bot_ended_at": 25.0, "ended_at": 40.0},
        10.0,
    ),
    ("still talking", {"bot_answered_at": 10.0, "ended_at": None}, None),
    ("store column wins", {"bot_seconds": 12.5, "bot_answered_at": 10.0, "ended_at": 99.0}, 12.5),
    ("store column zero", {"bot_seconds": 0.0, "bot_answered_at": None}, 0.0),
    (
        "store column null falls back",
        {"bot_seconds": None, "bot_answered_at": 0.0, "ended_at": 9.0},
        9.0,
    ),
    ("clock went backwards", {"bot_answered_at": 50.0, "ended_at": 40.0}, 0.0),
    (
        "datetimes from an ORM",
        {
            "bot_answered_at": datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC),
            "ended_at": datetime(2024, 5, 1, 10, 1, 30, tzinfo=UTC),
        },
        90.0,
    ),
    (
        "naive datetimes are UTC",
        {
            "bot_answered_at": datetime(2024, 5, 1, 10, 0),
            "transfer_at": datetime(2024, 5, 1, 10, 0, 5),
        },
        5.0,
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [c[1:] for c in BOT_SECONDS_CASES],
    ids=[c[0] for c in BOT_SECONDS_CASES],
)
def test_bot_seconds(fields: Record, expected: float | None) -> None:
    assert bot_seconds(fields) == expected


BILLABLE_CASES = [
    ("no bot", {"bot_answered_at": None}, 0.0),
    ("still talking", {"bot_answered_at": 0.0, "ended_at": None}, 0.0),
    ("zero seconds", {"bot_answered_at": 0.0, "ended_at": 0.0}, 0.0),
    ("one millisecond starts a minute", {"bot_answered_at": 0.0, "ended_at": 0.001}, 1.0),
    ("59.9 s", {"bot_answered_at": 0.0, "ended_at": 59.9}, 1.0),
    ("exactly 60 s", {"bot_answered_at": 0.0, "ended_at": 60.0}, 1.0),
    ("float noise above 60 s", {"bot_answered_at": 0.0, "ended_at": 60.0004}, 1.0),
    ("60.001 s", {"bot_answered_at": 0.0, "ended_at": 60.001}, 2.0),
    ("61 s", {"bot_answered_at": 0.0, "ended_at": 61.0}, 2.0),
    ("an hour", {"bot_answered_at": 0.0, "ended_at": 3600.0}, 60.0),
    (
        "store's minutes win",
        {"billable_minutes": 1.3, "bot_answered_at": 0.0, "ended_at": 600.0},
        1.3,
    ),
    ("store's seconds are rounded up", {"bot_seconds": 121.0}, 3.0),
    ("store's zero minutes", {"billable_minutes": 0.0, "bot_seconds": 0.0}, 0.0),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in BILLABLE_CASES], ids=[c[0] for c in BILLABLE_CASES]
)
def test_billable_minutes(fields: Record, expected: float) -> None:
    assert billable_minutes(fields) == expected


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [*((o, o) for o in OUTCOMES), (None, IN_PROGRESS), ("something-new", "error")],
)
def test_outcome_of(outcome: str | None, expected: str) -> None:
    assert outcome_of({"outcome": outcome}) == expected


GROUP_KEY_CASES = [
    ("day", {"started_at": MAY_1}, UTC, "2024-05-01"),
    # 23:30 UTC on 1 May is 01:30 on 2 May in Paris (UTC+2 in summer)
    (
        "day",
        {"started_at": datetime(2024, 5, 1, 23, 30, tzinfo=UTC).timestamp()},
        UTC,
        "2024-05-01",
    ),
    (
        "day",
        {"started_at": datetime(2024, 5, 1, 23, 30, tzinfo=UTC).timestamp()},
        PARIS,
        "2024-05-02",
    ),
    ("day", {"started_at": None}, UTC, NO_VALUE),
    ("profile", {"profile": "sales"}, UTC, "sales"),
    ("profile", {"profile": None}, UTC, NO_VALUE),
    ("queue", {"queue": "billing-queue"}, UTC, "billing-queue"),
    ("queue", {"queue": None}, UTC, NO_VALUE),
    ("queue", {}, UTC, NO_VALUE),
]


@pytest.mark.parametrize(("group_by", "fields", "tz", "expected"), GROUP_KEY_CASES)
def test_group_key(group_by: str, fields: Record, tz: Any, expected: str) -> None:
    assert group_key(fields, group_by, tz) == expected


def test_group_key_rejects_unknown_grouping() -> None:
    with pytest.raises(ReportError, match="group_by"):
        group_key({}, "team")


# -- periods -------------------------------------------------------------------------------


def test_period_bounds_are_local_midnights() -> None:
    period = Period.parse("2024-05-01", "2024-05-03")
    assert period.start_ts == datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert period.end_ts == datetime(2024, 5, 4, tzinfo=UTC).timestamp()
    assert [d.isoformat() for d in period.days()] == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert period.contains(period.start_ts)
    assert not period.contains(period.end_ts)
    assert str(period) == "2024-05-01 .. 2024-05-03 (UTC)"


def test_period_in_a_time_zone_follows_daylight_saving() -> None:
    # 31 March 2024: Paris skips 02:00-03:00, the day has 23 hours
    period = Period.parse("2024-03-31", "2024-03-31", PARIS)
    assert period.end_ts - period.start_ts == 23 * 3600
    assert period.start_ts == datetime(2024, 3, 30, 23, 0, tzinfo=UTC).timestamp()
    assert str(period) == "2024-03-31 .. 2024-03-31 (Europe/Paris)"


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2024-05-02", "2024-05-01", "ends"),
        ("2024/05/01", "2024-05-01", "from must be a date"),
        ("2024-05-01", "tomorrow", "to must be a date"),
        ("2024-02-30", "2024-03-01", "from must be a date"),
        ("", "2024-03-01", "from must be a date"),
        ("0001-01-01", "9999-12-31", f"longer than {MAX_PERIOD_DAYS} days"),
        ("9999-12-31", "9999-12-31", r"to \(9999-12-31\) is out of range"),
    ],
)
def test_period_rejects(first: str, last: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        Period.parse(first, last)


def test_period_length_limit_is_exact() -> None:
    first = date(2020, 1, 1)
    longest = Period(first, first + timedelta(days=MAX_PERIOD_DAYS - 1))
    assert len(longest.days()) == MAX_PERIOD_DAYS
    with pytest.raises(ReportError, match="longer than"):
        Period(first, first + timedelta(days=MAX_PERIOD_DAYS))
    # the first and the last day there are, when the period is short enough
    assert (
        Period(date.min, date.min).start_ts
        < Period(date.max - timedelta(days=1), date.max - timedelta(days=1)).end_ts
    )


@pytest.mark.parametrize("span", ["9999999999d", "99999999w"])
def test_last_period_out_of_range_is_a_report_error(span: str) -> None:
    with pytest.raises(ReportError, match="--last"):
        last_period(span, datetime(2024, 5, 8, tzinfo=UTC))


NAMED_PERIOD_CASES = [
    # now (UTC), name, first, last
    (datetime(2024, 5, 8, 7, 0), "previous_day", date(2024, 5, 7), date(2024, 5, 7)),
    (datetime(2024, 3, 1, 0, 0), "previous_day", date(2024, 2, 29), date(2024, 2, 29)),
    (datetime(2024, 1, 1, 7, 0), "previous_day", date(2023, 12, 31), date(2023, 12, 31)),
    # Wednesday 8 May 2024 -> Monday 29 April .. Sunday 5 May
    (datetime(2024, 5, 8, 7, 0), "previous_week", date(2024, 4, 29), date(2024, 5, 5)),
    # on a Monday, the week that ended yesterday
    (datetime(2024, 5, 6, 7, 0), "previous_week", date(2024, 4, 29), date(2024, 5, 5)),
    # on a Sunday, still the week before the current one
    (datetime(2024, 5, 12, 23, 59), "previous_week", date(2024, 4, 29), date(2024, 5, 5)),
    (datetime(2024, 5, 8, 7, 0), "previous_month", date(2024, 4, 1), date(2024, 4, 30)),
    (datetime(2024, 1, 15, 7, 0), "previous_month", date(2023, 12, 1), date(2023, 12, 31)),
    (datetime(2024, 3, 1, 7, 0), "previous_month", date(2024, 2, 1), date(2024, 2, 29)),
    (datetime(2024, 5, 8, 7, 0), "last_7_days", date(2024, 5, 1), date(2024, 5, 7)),
]


@pytest.mark.parametrize(("now", "name", "first", "last"), NAMED_PERIOD_CASES)
def test_named_period(now: datetime, name: str, first: date, last: date) -> None:
    period = named_period(name, now.replace(tzinfo=UTC))
    assert (period.first_day, period.last_day) == (first, last)


def test_named_period_uses_the_report_time_zone() -> None:
    # 23:30 UTC on 7 May is already 8 May in Paris: yesterday there is 7 May
    now = datetime(2024, 5, 7, 23, 30, tzinfo=UTC)
    assert named_period("previous_day", now, UTC).first_day == date(2024, 5, 6)
    assert named_period("previous_day", now, PARIS).first_day == date(2024, 5, 7)


def test_named_period_rejects_unknown() -> None:
    with pytest.raises(ReportError, match="unknown period"):
        named_period("yesterday-ish", datetime(2024, 5, 8, tzinfo=UTC))


@pytest.mark.parametrize(
    ("name", "expected"), [("UTC", "UTC"), ("utc", "UTC"), ("Europe/Paris", "Europe/Paris")]
)
def test_timezone_named(name: str, expected: str) -> None:
    assert Period(date(2024, 1, 1), date(2024, 1, 1), timezone_named(name)).tz_name == expected


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd"])
def test_timezone_named_rejects(name: str) -> None:
    with pytest.raises(ReportError, match="time zone"):
        timezone_named(name)


# -- rates ---------------------------------------------------------------------------------

RATE_CASES = [
    # resolved, escalated, bot_failed, abandoned, error, overloaded, bypassed,
    # escalation_failed, in progress
    #   -> containment, bot failure, abandon rates
    ((0, 0, 0, 0, 0, 0, 0, 0, 0), (None, None, None)),
    ((1, 0, 0, 0, 0, 0, 0, 0, 0), (1.0, 0.0, 0.0)),
    ((0, 1, 0, 0, 0, 0, 0, 0, 0), (0.0, 0.0, 0.0)),
    ((3, 1, 0, 0, 0, 0, 0, 0, 0), (0.75, 0.0, 0.0)),
    ((0, 0, 2, 0, 0, 0, 0, 0, 0), (None, 1.0, 0.0)),
    ((0, 0, 0, 4, 0, 0, 0, 0, 0), (None, 0.0, 1.0)),
    ((0, 0, 0, 0, 1, 0, 0, 0, 1), (None, 0.0, 0.0)),
    ((5, 3, 1, 1, 0, 0, 0, 0, 0), (5 / 8, 0.1, 0.1)),
    # calls shed by overload or that bypassed the app never met the bot: they count in no
    # rate but the total
    ((0, 1, 0, 0, 0, 0, 3, 0, 0), (0.0, 0.0, 0.0)),
    ((1, 0, 0, 0, 0, 2, 0, 0, 0), (1.0, 0.0, 0.0)),
    # containment ignores bot failures, abandons, errors and calls in progress
    ((1, 1, 5, 5, 5, 0, 0, 0, 5), (0.5, 5 / 22, 5 / 22)),
]


@pytest.mark.parametrize(("counts", "rates"), RATE_CASES)
def test_rates(counts: tuple[int, ...], rates: tuple[float | None, ...]) -> None:
    records = [
        rec(None if column == IN_PROGRESS else column)
        for column, count in zip(OUTCOME_COLUMNS, counts, strict=True)
        for _ in range(count)
    ]
    stats = summarize("x", records)
    assert stats.total == sum(counts)
    assert [stats.outcomes[c] for c in OUTCOME_COLUMNS] == list(counts)
    assert (stats.containment_rate, stats.bot_failure_rate, stats.abandon_rate) == pytest.approx(
        rates
    )
    for value, expected in zip(
        (stats.containment_rate, stats.bot_failure_rate, stats.abandon_rate), rates, strict=True
    ):
        assert (value is None) == (expected is None)


def test_escalation_targets_and_bot_time() -> None:
    records = [
        rec("escalated", escalate_to="billing", transfer_at=MAY_1 + 32, queue="billing-queue"),
        rec("escalated", escalate_to="billing", transfer_at=MAY_1 + 62, queue="billing-queue"),
        rec("escalated", escalate_to="agents-queue", transfer_at=MAY_1 + 12, queue="agents-queue"),
        rec("escalated", escalate_to=None, transfer_at=MAY_1 + 2, queue="agents-queue"),
        rec("resolved", escalate_to="ignored-not-escalated"),
        rec("bot_failed", bot_answered_at=None, queue="agents-queue"),  # no bot time at all
        rec(None, ended_at=None),  # bot still talking: no bot time yet
    ]
    stats = summarize("x", records)
    assert stats.escalation_targets == {"billing": 2, "agents-queue": 1, NO_VALUE: 1}
    # bot seconds: 30 + 60 + 10 + 0 + 30 (resolved: 2 s .. 32 s)
    assert stats.bot_seconds == 130.0
    assert stats.bot_calls == 5
    assert stats.avg_bot_seconds == 26.0
    # billable: 1 + 1 + 1 + 0 + 1
    assert stats.billable_minutes == 4.0
    assert group_dict(stats)["escalation_targets"] == {"billing": 2, NO_VALUE: 1, "agents-queue": 1}
    assert list(group_dict(stats)["escalation_targets"]) == ["billing", NO_VALUE, "agents-queue"]


def test_average_bot_time_uses_store_columns() -> None:
    records = [
        rec("resolved", bot_seconds=100.0, billable_minutes=1.7),
        rec("bot_failed", bot_answered_at=None, bot_seconds=0.0, billable_minutes=0.0),
    ]
    stats = summarize("x", records)
    assert stats.bot_calls == 1  # a bot that never answered is not averaged in
    assert stats.avg_bot_seconds == 100.0
    assert stats.billable_minutes == 1.7
    assert group_dict(stats)["billable_minutes"] == 1.7


def test_usage_minutes_per_profile() -> None:
    records = [
        rec("resolved", profile="sales", ended_at=MAY_1 + 2 + 61),  # 2 minutes
        rec("resolved", profile="sales", ended_at=MAY_1 + 2 + 10),  # 1
        rec("escalated", profile="default", transfer_at=MAY_1 + 2 + 120),  # 2
        rec("bot_failed", profile="support", bot_answered_at=None),  # 0: not listed
    ]
    stats = summarize("x", records)
    assert stats.usage_minutes == {"sales": 3.0, "default": 2.0}
    assert stats.billable_minutes == 5.0


# -- whole reports -------------------------------------------------------------------------

MAY = Period.parse("2024-05-01", "2024-05-03")
MIXED = [
    rec("resolved", at=MAY_1, profile="sales"),
    rec(
        "escalated",
        at=MAY_1 + 60,
        escalate_to="billing",
        queue="billing-queue",
        transfer_at=MAY_1 + 92,
    ),
    rec("bot_failed", at=MAY_1 + DAY, bot_answered_at=None, queue="agents-queue"),
    rec("abandoned", at=MAY_1 + 2 * DAY, profile="sales"),
    rec("resolved", at=MAY_1 - DAY),  # 30 April: outside
    rec("resolved", at=MAY.end_ts),  # 4 May 00:00: outside (end excluded)
    rec("resolved", at=MAY.start_ts, profile="night"),  # 1 May 00:00: inside
]

REPORT_CASES = [
    (
        "by day, every day has a row",
        "day",
        {
            "2024-05-01": (3, {"resolved": 2, "escalated": 1}),
            "2024-05-02": (1, {"bot_failed": 1}),
            "2024-05-03": (1, {"abandoned": 1}),
        },
    ),
    (
        "by profile",
        "profile",
        {
            "default": (2, {"escalated": 1, "bot_failed": 1}),
            "night": (1, {"resolved": 1}),
            "sales": (2, {"resolved": 1, "abandoned": 1}),
        },
    ),
    (
        "by queue",
        "queue",
        {
            NO_VALUE: (3, {"resolved": 2, "abandoned": 1}),
            "agents-queue": (1, {"bot_failed": 1}),
            "billing-queue": (1, {"escalated": 1}),
        },
    ),
]


@pytest.mark.parametrize(
    ("group_by", "expected"), [c[1:] for c in REPORT_CASES], ids=[c[0] for c in REPORT_CASES]
)
def test_build_report(group_by: str, expected: dict[str, tuple[int, dict[str, int]]]) -> None:
    report = build_report(MIXED, MAY, group_by)
    assert [row.key for row in report.rows] == list(expected)
    for row in report.rows:
        total, outcomes = expected[row.key]
        assert row.total == total
        assert {k: v for k, v in row.outcomes.items() if v} == outcomes
    assert report.total.key == TOTAL_KEY
    assert report.total.total == 5
    assert report.total.containment_rate == pytest.approx(2 / 3)
    assert report.total.bot_failure_rate == pytest.approx(1 / 5)
    assert report.total.abandon_rate == pytest.approx(1 / 5)


@pytest.mark.parametrize(
    ("group_by", "rows"),
    [("day", ["2024-05-01", "2024-05-02", "2024-05-03"]), ("profile", []), ("queue", [])],
)
def test_empty_period(group_by: str, rows: list[str]) -> None:
    report = build_report([rec("resolved", at=MAY_1 - DAY)], MAY, group_by)
    assert [r.key for r in report.rows] == rows
    for stats in (*report.rows, report.total):
        assert stats.total == 0
        assert all(v == 0 for v in stats.outcomes.values())
        assert stats.containment_rate is None
        assert stats.bot_failure_rate is None
        assert stats.abandon_rate is None
        assert stats.avg_bot_seconds is None
        assert stats.billable_minutes == 0
    data = json.loads(render_json(report))
    assert data["total"]["containment_rate"] is None
    assert data["total"]["avg_bot_seconds"] is None
    lines = list(csv.reader(io.StringIO(render_csv(report))))
    assert lines[-1][:3] == [TOTAL_KEY, "0", "0"]
    header = lines[0]
    for name in ("containment_rate", "bot_failure_rate", "abandon_rate", "avg_bot_seconds"):
        assert lines[-1][header.index(name)] == ""
    table = render_table(report)
    assert "(total)" in table
    total_line = next(line for line in table.splitlines() if line.startswith(TOTAL_KEY))
    assert total_line.split()[11:15] == ["-", "-", "-", "-"]


def test_build_report_rejects_unknown_grouping() -> None:
    with pytest.raises(ReportError, match="group_by"):
        build_report([], MAY, "hour")


def test_build_report_day_boundaries_in_a_time_zone() -> None:
    period = Period.parse("2024-05-01", "2024-05-01", PARIS)
    records = [
        rec("resolved", at=datetime(2024, 4, 30, 21, 59, tzinfo=UTC).timestamp()),  # 23:59 Paris
        rec("resolved", at=datetime(2024, 4, 30, 22, 0, tzinfo=UTC).timestamp()),  # 00:00 Paris
        rec("escalated", at=datetime(2024, 5, 1, 21, 59, tzinfo=UTC).timestamp()),  # 23:59 Paris
        rec("resolved", at=datetime(2024, 5, 1, 22, 0, tzinfo=UTC).timestamp()),  # next day
    ]
    report = build_report(records, period, "day")
    assert [(r.key, r.total) for r in report.rows] == [("2024-05-01", 2)]


# -- formats -------------------------------------------------------------------------------


def test_csv_layout() -> None:
    report = build_report(MIXED, MAY, "profile")
    lines = list(csv.reader(io.StringIO(render_csv(report))))
    assert lines[0] == csv_columns("profile")
    assert lines[0][:2] == ["profile", "total"]
    assert [line[0] for line in lines[1:]] == ["default", "night", "sales", TOTAL_KEY]
    total = dict(zip(lines[0], lines[-1], strict=True))
    assert total["total"] == "5"
    assert total["containment_rate"] == "0.6667"
    assert total["bot_failure_rate"] == "0.2"
    assert total["escalation_targets"] == "billing=1"
    assert total["usage_minutes_by_profile"] == "default=1;night=1;sales=2"
    assert render_csv(report).endswith("\r\n")


def test_csv_never_starts_a_cell_with_a_formula() -> None:
    report = build_report(
        [
            rec("escalated", escalate_to='=HYPERLINK("http://x")', transfer_at=MAY_1 + 5),
            rec("escalated", escalate_to="-1+1", transfer_at=MAY_1 + 5),
        ],
        MAY,
        "day",
    )
    lines = list(csv.reader(io.StringIO(render_csv(report))))
    targets = dict(zip(lines[0], lines[1], strict=True))["escalation_targets"]
    # the second name is quoted (not plain), so that cell starts with its quote
    assert targets == '\'-1+1=1;"=HYPERLINK(\\"http://x\\")"=1'
    for line in lines[1:]:
        for cell in line:
            assert not cell.startswith(("=", "+", "@")), cell


def test_json_layout() -> None:
    report = build_report(MIXED, MAY, "queue")
    data = json.loads(render_json(report))
    assert data["from"] == "2024-05-01" and data["to"] == "2024-05-03"
    assert data["group_by"] == "queue" and data["timezone"] == "UTC"
    assert [r["key"] for r in data["rows"]] == [NO_VALUE, "agents-queue", "billing-queue"]
    assert data["total"]["outcomes"] == {
        "resolved": 2,
        "escalated": 1,
        "bot_failed": 1,
        "abandoned": 1,
        "error": 0,
        "overloaded": 0,
        "bypassed": 0,
        "escalation_failed": 0,
        "in_progress": 0,
    }
    assert data["total"]["containment_rate"] == 0.6667
    assert data["total"]["escalation_targets"] == {"billing": 1}
    assert data["rows"][1]["containment_rate"] is None  # agents-queue: one bot failure only


def test_table_layout() -> None:
    report = build_report(MIXED, MAY, "day")
    text = render_table(report)
    lines = text.splitlines()
    assert lines[0] == "Interaction report 2024-05-01 .. 2024-05-03 (UTC), grouped by day"
    assert lines[2].split()[:3] == ["day", "total", "resolved"]
    assert lines[3].startswith("-")
    assert lines[4].split() == [
        "2024-05-01", "3", "2", "1", "0", "0", "0", "0", "0", "0", "0",
        "66.7%", "21-94%", "0.0%", "0.0%", "0.0%", "-", "-", "-", "-", "30.0", "3",
        "billing=1",
    ]  # fmt: skip
    assert lines[5].split()[11:17] == ["-", "-", "100.0%", "0.0%", "0.0%", "-"]
    assert lines[-1] == "Bot usage (billable minutes) by profile: default=1, night=1, sales=2"
    # the columns line up: every figure row is as wide as the header up to the last column
    assert len({len(line.rsplit("  ", 1)[0]) for line in lines[4:7]}) == 1


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_render_dispatch(fmt: str) -> None:
    report = build_report(MIXED, MAY, "day")
    assert render(report, fmt) == {"table": render_table, "csv": render_csv, "json": render_json}[
        fmt
    ](report)


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ReportError, match="format"):
        render(build_report([], MAY), "xlsx")


# names in list cells: the bot's escalate_to, written so that one name reads as one name
_PAIR = re.compile(r'("(?:[^"\\]|\\.)*"|[^"=;\s]+)=([0-9.]+)')
TRICKY_TARGETS = {"sales": 3, "billing=9999;sales": 1, "a b": 1, 'say "hi"': 1, "ünï": 1}


def _read_pairs(cell: str, separator: str) -> dict[str, int]:
    """Parse a list cell back: quoted names as JSON strings; the whole cell must be used."""
    pairs = [_PAIR.fullmatch(item) for item in _split_pairs(cell, separator)]
    assert all(pairs), cell
    return {(json.loads(m[1]) if m[1].startswith('"') else m[1]): int(m[2]) for m in pairs if m}


def _split_pairs(cell: str, separator: str) -> list[str]:
    """Split at separators outside quotes."""
    items, current, quoted, escaped = [], "", False, False
    for char in cell:
        if char == separator and not quoted:
            items.append(current)
            current = ""
            continue
        current += char
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
    return [*items, current]


def _tricky_report() -> Any:
    records = [
        rec("escalated", escalate_to=name, transfer_at=MAY_1 + 5)
        for name, count in TRICKY_TARGETS.items()
        for _ in range(count)
    ]
    return build_report(records, MAY, "profile")


def test_bot_supplied_names_are_quoted_in_text_and_csv() -> None:
    report = _tricky_report()
    # CSV: the csv module quotes the cell; inside it, every name reads back as one name
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    cell = rows[-1]["escalation_targets"]
    assert cell == 'sales=3;"a b"=1;"billing=9999;sales"=1;"say \\"hi\\""=1;"ünï"=1'
    assert _read_pairs(cell, ";") == TRICKY_TARGETS
    # text: the same names, space-separated
    total_line = render_table(report).splitlines()[-3]
    cell = total_line.split("  ")[-1]
    assert cell == 'sales=3 "a b"=1 "billing=9999;sales"=1 "say \\"hi\\""=1 "ünï"=1'
    assert _read_pairs(cell, " ") == TRICKY_TARGETS
    # JSON keeps names as object keys
    assert json.loads(render_json(report))["total"]["escalation_targets"] == TRICKY_TARGETS


def test_bot_supplied_names_are_quoted_and_escaped_in_html() -> None:
    report = _tricky_report()
    html = report_summary(report, build_report([], MAY, "day"))
    assert "&quot;billing=9999;sales&quot;=1" in html
    assert "billing=9999;sales=1" not in html
    assert "&quot;a b&quot;=1" in html and "sales=3" in html


# -- where records come from ---------------------------------------------------------------


class _AllOnly:
    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def all(self) -> list[Record]:
        return self.records


class _WithBetween(_AllOnly):
    def __init__(self, records: list[Record]) -> None:
        super().__init__(records)
        self.asked: list[tuple[float, float]] = []

    def all(self) -> list[Record]:
        raise AssertionError("between() should have been used")

    def between(self, start_ts: float, end_ts: float) -> list[Record]:
        self.asked.append((start_ts, end_ts))
        return [r for r in self.records if start_ts <= r["started_at"] < end_ts]


@pytest.mark.parametrize("source", [_AllOnly, _WithBetween])
def test_records_between(source: type[_AllOnly]) -> None:
    store = source(MIXED)
    got = records_between(store, MAY.start_ts, MAY.end_ts)
    assert len(got) == 5
    assert all(MAY.contains(r["started_at"]) for r in got)
    if isinstance(store, _WithBetween):
        assert store.asked == [(MAY.start_ts, MAY.end_ts)]


def test_records_from_a_real_store(tmp_path: Any) -> None:
    from ari_app.store import InteractionStore

    store = InteractionStore(tmp_path / "records.sqlite3")
    try:
        for i, record in enumerate(MIXED):
            fields = {
                k: v
                for k, v in record.items()
                if k not in {"interaction_id", "state"} and v is not None
            }
            create(store, f"r{i}", **cast(RecordChange, {**fields, "caller_channel": f"c{i}"}))
        report = build_report(records_between(store, MAY.start_ts, MAY.end_ts), MAY, "day")
    finally:
        store.close()
    assert report.total.total == 5
    assert report.total.outcomes["escalated"] == 1
    assert report.total.escalation_targets == {"billing": 1}


# -- properties ----------------------------------------------------------------------------

PERIOD = Period.parse("2024-05-01", "2024-05-07")
_profiles = st.sampled_from(["default", "sales", "night"])
_queues = st.one_of(st.none(), st.sampled_from(["agents-queue", "billing-queue"]))
_offsets = st.one_of(st.none(), st.floats(min_value=0, max_value=4000, allow_nan=False))


@st.composite
def records(draw: st.DrawFn) -> Record:
    started = draw(
        st.floats(
            min_value=PERIOD.start_ts - 2 * DAY, max_value=PERIOD.end_ts + 2 * DAY, allow_nan=False
        )
    )
    answered = draw(_offsets)
    record: dict[str, Any] = {
        "outcome": draw(st.one_of(st.none(), st.sampled_from(OUTCOMES))),
        "profile": draw(_profiles),
        "queue": draw(_queues),
        "escalate_to": draw(st.one_of(st.none(), st.text(max_size=12))),
        "started_at": started,
        "bot_answered_at": None if answered is None else started + answered,
        "transfer_at": None,
        "ended_at": None,
    }
    if answered is not None:
        for key in ("transfer_at", "bot_ended_at", "ended_at"):
            offset = draw(_offsets)
            record[key] = None if offset is None else started + answered + offset
    if draw(st.booleans()):
        record["bot_seconds"] = draw(st.one_of(st.none(), st.floats(min_value=0, max_value=1e5)))
        record["billable_minutes"] = draw(
            st.one_of(st.none(), st.floats(min_value=0, max_value=2000))
        )
    return cast(Record, record)


def _check_stats(stats: GroupStats) -> None:
    assert sum(stats.outcomes.values()) == stats.total
    assert set(stats.outcomes) == set(OUTCOME_COLUMNS)
    assert sum(stats.escalation_targets.values()) == stats.outcomes["escalated"]
    for rate in (stats.containment_rate, stats.bot_failure_rate, stats.abandon_rate):
        assert rate is None or 0.0 <= rate <= 1.0
    decided = stats.outcomes["resolved"] + stats.outcomes["escalated"]
    assert (stats.containment_rate is None) == (decided == 0)
    assert (stats.bot_failure_rate is None) == (stats.total == 0)
    assert (stats.abandon_rate is None) == (stats.total == 0)
    assert stats.bot_calls <= stats.total
    assert stats.avg_bot_seconds is None or stats.avg_bot_seconds >= 0
    assert stats.billable_minutes >= 0
    assert math.isclose(sum(stats.usage_minutes.values()), stats.billable_minutes, abs_tol=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), max_size=40), st.sampled_from(GROUP_BYS))
def test_counts_add_up_and_rates_are_fractions(items: list[Record], group_by: str) -> None:
    report = build_report(items, PERIOD, group_by)
    inside = [r for r in items if PERIOD.contains(r["started_at"])]
    assert report.total.total == len(inside)
    assert sum(row.total for row in report.rows) == report.total.total
    for outcome in OUTCOME_COLUMNS:
        assert sum(row.outcomes[outcome] for row in report.rows) == report.total.outcomes[outcome]
    assert math.isclose(
        sum(r.billable_minutes for r in report.rows), report.total.billable_minutes, abs_tol=1e-6
    )
    assert math.isclose(
        sum(r.bot_seconds for r in report.rows),
        report.total.bot_seconds,
        rel_tol=1e-9,
        abs_tol=1e-6,
    )
    for stats in (*report.rows, report.total):
        _check_stats(stats)
    if group_by == "day":
        assert len(report.rows) == 7
    # every format renders; CSV has a row per group and the total, JSON has no NaN
    lines = list(csv.reader(io.StringIO(render_csv(report))))
    assert len(lines) == len(report.rows) + 2
    assert all(len(line) == len(lines[0]) for line in lines)
    data = json.loads(render_json(report), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert data["total"]["total"] == len(inside)
    assert render_table(report).count("\n") >= len(report.rows) + 5


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_each_started_minute_is_billed(seconds: float) -> None:
    minutes = billable_minutes({"bot_answered_at": 0.0, "ended_at": seconds})
    assert minutes.is_integer()
    assert minutes * 60 >= round(seconds, 3)
    assert (minutes - 1) * 60 < round(seconds, 3) or minutes == 0


def _ab_record(n: int, first: str, result: str, outcome: str, **more: Any) -> Record:
    attempts = [{"uri": first, "result": result}]
    if result != "answered" and "bot_uri" in more:
        attempts.append({"uri": more["bot_uri"], "result": "answered"})
    return {
        "interaction_id": f"ab{n}",
        "started_at": datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp() + n,
        "profile": "default",
        "outcome": outcome,
        "bots_tried": json.dumps(attempts),
        "bot_uri": more.get("bot_uri", first if result == "answered" else None),
        "bot_seconds": more.get("bot_seconds", 60.0 if result == "answered" else 0.0),
    }


def test_group_by_bot_is_the_first_bot_dialled() -> None:
    a, b = "sip:a@127.0.0.1:5080", "sip:b@127.0.0.2:5080"
    records = [
        _ab_record(1, a, "answered", "resolved"),
        _ab_record(2, a, "answered", "escalated"),
        _ab_record(3, a, "bot_congestion", "resolved", bot_uri=b, bot_seconds=30.0),
        _ab_record(4, b, "answered", "resolved"),
        _ab_record(5, b, "bot_noanswer", "bot_failed"),
        # passed over undialled: the call belongs to the bot that was dialled
        {
            **_ab_record(6, b, "answered", "resolved"),
            "bots_tried": json.dumps(
                [{"uri": a, "result": "skipped_unreachable"}, {"uri": b, "result": "answered"}]
            ),
        },
        {"interaction_id": "x", "started_at": datetime(2024, 5, 1, 11, tzinfo=UTC).timestamp(),
         "profile": "default", "outcome": "overloaded"},
    ]  # fmt: skip
    report = build_report(cast(list[Record], records), MAY, "bot")
    rows = {r.key: r for r in report.rows}
    assert set(rows) == {a, b, NO_VALUE}
    assert (rows[a].total, rows[a].first_bot_failures, rows[a].outcomes["resolved"]) == (3, 1, 2)
    assert rows[a].containment_rate == pytest.approx(2 / 3)
    assert (rows[b].total, rows[b].first_bot_failures, rows[b].outcomes["bot_failed"]) == (3, 1, 1)
    assert rows[b].first_bot_failure_rate == pytest.approx(1 / 3)
    assert rows[NO_VALUE].total == 1
    low, high = rows[a].containment_ci95 or (0.0, 0.0)
    assert low < 2 / 3 < high
    data = json.loads(render_json(report))
    assert {r["key"] for r in data["rows"]} == {a, b, NO_VALUE}
    assert render_csv(report).splitlines()[0].split(",")[0] == "bot"


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (45, 50, 0.7864, 0.9565),
        (100, 100, 0.963, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got is not None
    assert got[0] == pytest.approx(low, abs=5e-4) and got[1] == pytest.approx(high, abs=5e-4)
    assert wilson_interval(0, 0) is None


def test_group_by_node_shows_every_node_of_a_shared_store() -> None:
    records: list[Record] = [
        {**rec("resolved", at=MAY_1), "node": "node-1"},
        {**rec("escalated", at=MAY_1 + 60), "node": "node-2"},
        {**rec("resolved", at=MAY_1 + 120), "node": "node-2"},
        rec("abandoned", at=MAY_1 + 180),  # written before records named their node
    ]
    report = build_report(records, MAY, "node")
    data = json.loads(render_json(report))
    assert [(r["key"], r["total"]) for r in data["rows"]] == [
        (NO_VALUE, 1),
        ("node-1", 1),
        ("node-2", 2),
    ]
    assert data["total"]["total"] == 4
