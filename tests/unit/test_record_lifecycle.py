"""Reconciliation's bot part of an orphaned record, a pure function.

The record's lifecycle itself (session transitions, reconciliation at start and after a
reconnection, callers left waiting) is data: tests/scenarios/ari/record_lifecycle/*.json,
run by tests/unit/test_scenarios.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from ari_app.calls.reconcile import orphan_bot_part
from ari_app.records import Record


@pytest.mark.parametrize(
    ("record", "alive_until", "expected"),
    [
        ({"bot_seconds": 5.0, "bot_answered_at": 1.0}, 100.0, {}),
        ({"bot_answered_at": None}, 100.0, {"bot_seconds": 0.0, "billable_minutes": 0.0}),
        ({"bot_answered_at": 10.0, "transfer_at": 40.0}, 100.0, {"bot_seconds": 30.0}),
        ({"bot_answered_at": 10.0, "bot_ended_at": 25.0}, None, {"bot_seconds": 15.0}),
        ({"bot_answered_at": 10.0}, 70.0, {"bot_seconds": 60.0, "billable_minutes": 1.0}),
        ({"bot_answered_at": 10.0}, None, {"billing_rounding": "ceil_minute"}),
    ],
)
def test_orphan_bot_part(
    record: Record, alive_until: float | None, expected: dict[str, Any]
) -> None:
    got: dict[str, Any] = dict(orphan_bot_part(record, alive_until, "ceil_minute"))
    assert {k: got[k] for k in expected} == expected
    if "bot_seconds" not in got:
        assert "bot_ended_at" not in got
