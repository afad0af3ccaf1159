"""``ari-app report``: the same report as the library, from the configured store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ari_app import cli
from ari_app.config import load_config
from ari_app.reporting.aggregation import build_report
from ari_app.reporting.periods import Period
from ari_app.reporting.rendering import render
from ari_app.store import InteractionStore
from tests.records import create, update


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("BOTBRIDGE_STATE_DIR", str(state))
    monkeypatch.delenv("BOTBRIDGE_CONFIG", raising=False)
    store = InteractionStore(load_config().store.url)
    start = datetime(2024, 5, 2, 9, 0, tzinfo=UTC).timestamp()
    for i, outcome in enumerate(["resolved", "escalated", "abandoned"]):
        iid = f"call{i}"
        create(store, iid, profile="default", caller_channel=iid, started_at=start + 60 * i)
        update(
            store,
            iid,
            state=outcome,
            outcome=outcome,
            escalate_to="billing" if outcome == "escalated" else None,
            queue="billing-queue" if outcome == "escalated" else None,
            bot_answered_at=start + 60 * i + 1,
            transfer_at=start + 60 * i + 21 if outcome == "escalated" else None,
            ended_at=start + 60 * i + 41,
        )
    store.close()
    return state


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize("group_by", ["day", "profile", "queue", "bot"])
def test_report_command(
    state: Path, capsys: pytest.CaptureFixture[str], fmt: str, group_by: str
) -> None:
    argv = ["report", "--from", "2024-05-01", "--to", "2024-05-03"]
    assert cli.main([*argv, "--group-by", group_by, "--format", fmt]) == 0
    out = capsys.readouterr().out
    store = InteractionStore(load_config().store.url)
    try:
        expected = build_report(store.all(), Period.parse("2024-05-01", "2024-05-03"), group_by)
    finally:
        store.close()
    assert out == render(expected, fmt)
    if fmt == "json":
        assert json.loads(out)["total"]["outcomes"]["escalated"] == 1


def test_report_defaults_to_a_table_by_day(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--from", "2024-05-02", "--to", "2024-05-02"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Interaction report 2024-05-02 .. 2024-05-02 (UTC), grouped by day")
    assert "50.0%" in out  # containment: 1 resolved, 1 escalated


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2024-05-03", "2024-05-01", "ends"),
        ("May 1", "2024-05-01", "from must be a date"),
        ("0001-01-01", "9999-12-31", "longer than"),
        ("9999-12-31", "9999-12-31", "out of range"),
    ],
)
def test_report_bad_dates(
    state: Path, capsys: pytest.CaptureFixture[str], first: str, last: str, message: str
) -> None:
    assert cli.main(["report", "--from", first, "--to", last]) == 2
    assert message in capsys.readouterr().err


def test_report_choices_are_checked(state: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--from", "2024-05-01", "--to", "2024-05-01", "--group-by", "hour"])
    assert exc.value.code == 2
