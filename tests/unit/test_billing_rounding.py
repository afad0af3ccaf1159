"""Billable minutes from bot seconds: the rounding table of docs/records.md."""

from __future__ import annotations

import pytest

from ari_app.records import Record
from ari_app.records.billing import (
    ROUNDINGS,
    billable_minutes,
    bot_seconds,
    charge,
    no_charge,
)
from ari_app.reporting.figures import billable_minutes as report_minutes

# seconds -> (ceil_minute, ceil_6s, exact)
TABLE = [
    (0.0, 0.0, 0.0, 0.0),
    (0.001, 1.0, 0.1, 0.0),
    (0.4, 1.0, 0.1, 0.01),
    (1.0, 1.0, 0.1, 0.02),
    (5.999, 1.0, 0.1, 0.1),
    (6.0, 1.0, 0.1, 0.1),
    (6.001, 1.0, 0.2, 0.1),
    (7.0, 1.0, 0.2, 0.12),
    (30.0, 1.0, 0.5, 0.5),
    (59.999, 1.0, 1.0, 1.0),
    (60.0, 1.0, 1.0, 1.0),
    (60.0000001, 1.0, 1.0, 1.0),  # float noise below a millisecond never adds a minute
    (60.001, 2.0, 1.1, 1.0),
    (61.0, 2.0, 1.1, 1.02),
    (89.5, 2.0, 1.5, 1.49),
    (119.0, 2.0, 2.0, 1.98),
    (120.0, 2.0, 2.0, 2.0),
    (121.0, 3.0, 2.1, 2.02),
    (3599.0, 60.0, 60.0, 59.98),
    (3600.0, 60.0, 60.0, 60.0),
    (3601.0, 61.0, 60.1, 60.02),
]


@pytest.mark.parametrize(("seconds", "ceil_minute", "ceil_6s", "exact"), TABLE)
def test_rounding_table(seconds: float, ceil_minute: float, ceil_6s: float, exact: float) -> None:
    assert billable_minutes(seconds, "ceil_minute") == ceil_minute
    assert billable_minutes(seconds, "ceil_6s") == ceil_6s
    assert billable_minutes(seconds, "exact") == exact


def test_default_is_every_started_minute() -> None:
    assert billable_minutes(61.0) == 2.0


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_unknown_and_negative_times(rounding: str) -> None:
    assert billable_minutes(None, rounding) is None
    assert billable_minutes(-5.0, rounding) == 0.0


def test_unknown_rounding_is_refused() -> None:
    with pytest.raises(ValueError, match="ceil_minute"):
        billable_minutes(10.0, "floor")


def test_bot_seconds_from_timestamps() -> None:
    assert bot_seconds(1000.0, 1061.2345) == 61.235  # to the millisecond
    assert bot_seconds(None, 1000.0) is None
    assert bot_seconds(1000.0, None) is None
    assert bot_seconds(1000.0, 999.0) == 0.0  # clock step backwards: never negative


def test_charge_and_no_charge_are_record_columns() -> None:
    assert charge(100.0, 161.0, "ceil_6s") == {
        "bot_seconds": 61.0,
        "billable_minutes": 1.1,
        "billing_rounding": "ceil_6s",
    }
    assert charge(100.0, None) == {
        "bot_seconds": None,
        "billable_minutes": None,
        "billing_rounding": "ceil_minute",
    }
    assert no_charge("exact") == {
        "bot_seconds": 0.0,
        "billable_minutes": 0.0,
        "billing_rounding": "exact",
    }


@pytest.mark.parametrize(
    ("rounding", "expected"), [("ceil_6s", 0.2), ("exact", 0.12), (None, 1.0), ("bogus", 1.0)]
)
def test_a_report_bills_a_record_without_minutes_as_the_call_would(
    rounding: str | None, expected: float
) -> None:
    """The reports bill with the calls' function, under the record's rounding (ceil_minute
    when it names none it knows); a call settled under that rounding bills the same."""
    record: Record = {"bot_answered_at": 100.0, "bot_ended_at": 107.0, "billing_rounding": rounding}
    assert report_minutes(record) == expected
    known = rounding is not None and rounding in ROUNDINGS
    settled = charge(100.0, 107.0, rounding if known and rounding else "ceil_minute")
    assert settled["billable_minutes"] == expected
