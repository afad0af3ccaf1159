"""Report schedules: when they fire, what they send (the sender is faked here; the real SMTP
path is in tests/integration/test_report_email.py)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from ari_app.config import Config, load_config
from ari_app.config import reporting as reporting_config
from ari_app.records import Record
from ari_app.reporting.aggregation import build_report
from ari_app.reporting.mail import MailError
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.periods import Period
from ari_app.reporting.rendering import render_csv
from ari_app.reporting.scheduler import ReportSchedule, ReportScheduler

WED_0700 = datetime(2024, 5, 8, 7, 0, tzinfo=UTC)


def _ts(day: int, hour: int, minute: int, second: int = 0) -> float:
    return datetime(2024, 5, day, hour, minute, second, tzinfo=UTC).timestamp()


RECORDS: list[Record] = [
    {"outcome": "resolved", "profile": "default", "started_at": _ts(7, 9, 0)},
    {
        "outcome": "escalated",
        "profile": "sales",
        "escalate_to": "billing",
        "queue": "billing-queue",
        "started_at": _ts(7, 9, 5),
        "bot_answered_at": _ts(7, 9, 5, 1),
        "transfer_at": _ts(7, 9, 6, 1),
    },
    # today: not in previous_day
    {"outcome": "resolved", "profile": "default", "started_at": _ts(8, 6, 0)},
]

SCHEDULES = """
[smtp]
host = "127.0.0.1"
from = "reports@example.com"

[[report_schedules]]
name = "daily"
cron = "0 7 * * *"
period = "previous_day"
group_by = "profile"
recipients = ["sup@example.com"]
subject = "Daily {from} .. {to} by {group_by} ({name}, {period})"

[[report_schedules]]
cron = "0 7 * * mon"
period = "previous_week"
recipients = ["boss@example.com", "sup@example.com"]
"""


class _Records:
    def all(self) -> list[Record]:
        return RECORDS


class _Outbox:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[EmailMessage] = []
        self.fail = fail

    async def __call__(self, config: Config, message: EmailMessage) -> None:
        if self.fail:
            raise MailError("SMTP 127.0.0.1:25: (535, 'authentication failed')")
        self.sent.append(message)


def _config(tmp_path: Path, text: str = SCHEDULES) -> Config:
    path = tmp_path / "botbridge.toml"
    path.write_text(text)
    return load_config(path, env={"BOTBRIDGE_STATE_DIR": str(tmp_path / "state")})


def _scheduler(tmp_path: Path, outbox: _Outbox, now: datetime = WED_0700) -> ReportScheduler:
    return ReportScheduler(
        _config(tmp_path),
        _Records(),
        metrics=Metrics(process=False),
        sender=outbox,
        clock=lambda: now.timestamp(),
    )


async def test_fires_once_in_its_minute(tmp_path: Path) -> None:
    outbox = _Outbox()
    scheduler = _scheduler(tmp_path, outbox)
    assert [s.name for s in scheduler.schedules] == ["daily", "schedule-2"]
    assert await scheduler.tick(WED_0700) == ["daily"]  # a Wednesday: not the weekly one
    assert await scheduler.tick(WED_0700.replace(second=40)) == []
    assert await scheduler.tick(WED_0700.replace(minute=1)) == []
    assert await scheduler.tick(WED_0700.replace(day=9)) == ["daily"]
    assert len(outbox.sent) == 2


async def test_monday_sends_both(tmp_path: Path) -> None:
    outbox = _Outbox()
    scheduler = _scheduler(tmp_path, outbox)
    monday = datetime(2024, 5, 13, 7, 0, tzinfo=UTC)
    assert sorted(await scheduler.tick(monday)) == ["daily", "schedule-2"]
    weekly = next(m for m in outbox.sent if m["To"] == "boss@example.com, sup@example.com")
    assert weekly["Subject"] == "Bot bridge report 2024-05-06 .. 2024-05-12 by day"


async def test_message_content(tmp_path: Path) -> None:
    outbox = _Outbox()
    await _scheduler(tmp_path, outbox).tick(WED_0700)
    (message,) = outbox.sent
    assert message["From"] == "reports@example.com"
    assert message["To"] == "sup@example.com"
    assert message["Subject"] == "Daily 2024-05-07 .. 2024-05-07 by profile (daily, previous_day)"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Interaction report 2024-05-07 .. 2024-05-07 (UTC), grouped by profile" in text
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_filename() == "botbridge-report-2024-05-07-2024-05-07-profile.csv"
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    content = payload.decode()
    expected = build_report(RECORDS, Period.parse("2024-05-07", "2024-05-07"), "profile")
    assert content == render_csv(expected)
    rows = list(csv.DictReader(io.StringIO(content)))
    assert [(r["profile"], r["total"]) for r in rows] == [
        ("default", "1"),
        ("sales", "1"),
        ("(total)", "2"),
    ]


async def test_a_failed_send_is_counted_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = _scheduler(tmp_path, _Outbox(fail=True))
    assert await scheduler.tick(WED_0700) == []
    assert "report schedule daily: not sent: SMTP 127.0.0.1:25" in caplog.text
    metrics = scheduler.metrics
    assert metrics is not None
    assert metrics.report_emails.labels("failed")._value.get() == 1
    assert metrics.report_emails.labels("sent")._value.get() == 0


async def test_run_wakes_each_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [datetime(2024, 5, 8, 6, 58, 30, tzinfo=UTC).timestamp()]
    outbox = _Outbox()
    scheduler = ReportScheduler(
        _config(tmp_path), _Records(), sender=outbox, clock=lambda: clock[0]
    )
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds
        if len(sleeps) == 4:
            raise asyncio.CancelledError

    monkeypatch.setattr("ari_app.reporting.scheduler.asyncio.sleep", fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        await scheduler.run()
    # 06:58:30 -> 06:59:00.05 -> 07:00:00.05 (fires) -> 07:01:00.05 -> 07:02:00.05
    assert sleeps[0] == pytest.approx(30.05)
    assert all(s == pytest.approx(60.0, abs=0.1) for s in sleeps[1:])
    assert [m["Subject"] for m in outbox.sent] == [
        "Daily 2024-05-07 .. 2024-05-07 by profile (daily, previous_day)"
    ]


async def test_no_schedules_no_loop(tmp_path: Path) -> None:
    scheduler = ReportScheduler(_config(tmp_path, ""), _Records(), sender=_Outbox())
    await asyncio.wait_for(scheduler.run(), 1)  # returns at once


def test_schedule_from_config_and_subject() -> None:
    configured = reporting_config.ReportSchedule(
        name="",
        cron="@daily",
        period="last_7_days",
        group_by="day",
        recipients=("a@example.com",),
        subject="{name}: {from}/{to} {group_by} {unknown}",
    )
    schedule = ReportSchedule.from_config(configured, 4)
    assert schedule.name == "schedule-5"
    report = build_report([], Period.parse("2024-05-01", "2024-05-07"))
    assert schedule.subject_for(report) == "schedule-5: 2024-05-01/2024-05-07 day {unknown}"
