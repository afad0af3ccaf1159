"""Scheduled report emails: ``[[report_schedules]]`` checked once a minute in the app.

Each schedule fires in every minute its cron expression matches (wall-clock time in
``[reports] timezone``), at most once per minute. A minute missed (the process was not
running, or the loop was blocked past it) is not caught up.

Several nodes sharing one store run the same schedules: before sending, a node claims the
run (schedule name, minute) in the store (``claim_report_run``, a primary key); only the
node whose claim succeeds sends, so each run is mailed once however many nodes there are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

from ari_app.config import Config
from ari_app.config import ReportSchedule as ConfiguredSchedule
from ari_app.config.cron import CronSchedule
from ari_app.reporting.aggregation import RecordSource, Report, report_from_store
from ari_app.reporting.mail import MailError, build_message, send_message
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.periods import named_period, timezone_named
from ari_app.reporting.rendering import render_csv, render_table
from ari_app.reporting.report_html import report_email

log = logging.getLogger(__name__)

TICK_MARGIN_SECONDS = 0.05  # wake just after the minute starts
Sender = Callable[[Config, EmailMessage], Awaitable[None]]


@dataclass(frozen=True)
class ReportSchedule:
    """A configured schedule ready to run: its cron expression parsed, its name defaulted."""

    name: str
    cron: CronSchedule
    period: str
    group_by: str
    recipients: tuple[str, ...]
    subject: str

    @classmethod
    def from_config(cls, configured: ConfiguredSchedule, index: int) -> ReportSchedule:
        return cls(
            name=configured.name or f"schedule-{index + 1}",
            cron=CronSchedule.parse(configured.cron),
            period=configured.period,
            group_by=configured.group_by,
            recipients=configured.recipients,
            subject=configured.subject,
        )

    def subject_for(self, report: Report) -> str:
        values = {
            "{from}": report.period.first_day.isoformat(),
            "{to}": report.period.last_day.isoformat(),
            "{group_by}": report.group_by,
            "{period}": self.period,
            "{name}": self.name,
        }
        subject = self.subject
        for placeholder, value in values.items():
            subject = subject.replace(placeholder, value)
        return subject


def run_key(moment: datetime) -> str:
    """The run a moment belongs to: its minute, in UTC (the same on every node)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def attachment_name(report: Report) -> str:
    period = report.period
    return (
        f"botbridge-report-{period.first_day.isoformat()}-{period.last_day.isoformat()}"
        f"-{report.group_by}.csv"
    )


def report_message(
    config: Config, schedule: ReportSchedule, report: Report, daily: Report | None = None
) -> EmailMessage:
    """Text part (the table), HTML part (the /reports page's figures, chart and table) and
    the CSV attached. ``daily`` is the same period grouped by day, for the chart."""
    intro = (
        f"Scheduled report {schedule.name!r} ({schedule.period}, cron {schedule.cron.expression})."
        "\nThe attached CSV holds the same figures; definitions are in docs/reports.md."
    )
    return build_message(
        sender=config.smtp.sender,
        recipients=schedule.recipients,
        subject=schedule.subject_for(report),
        body=intro + "\n\n" + render_table(report),
        attachment_name=attachment_name(report),
        attachment=render_csv(report),
        html=report_email(report, daily or report, intro=intro.replace("\n", " ")),
    )


class ReportScheduler:
    def __init__(
        self,
        config: Config,
        store: RecordSource,
        *,
        metrics: Metrics | None = None,
        sender: Sender = send_message,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.tz = timezone_named(config.reports.timezone)
        self.schedules: Sequence[ReportSchedule] = [
            ReportSchedule.from_config(s, i) for i, s in enumerate(config.report_schedules)
        ]
        self._sender = sender
        self._clock = clock
        self._fired: dict[int, str] = {}  # schedule index -> minute it last fired

    async def run(self) -> None:
        if not self.schedules:
            return
        for schedule in self.schedules:
            upcoming = schedule.cron.next_after(self.now())  # the config checked it fires
            log.info(
                "report schedule %s (%s: %s): next at %s",
                schedule.name,
                schedule.cron.expression,
                schedule.cron.explain(),
                upcoming.isoformat(),
            )
        while True:
            await self.tick(self.now())
            seconds = self._clock()
            await asyncio.sleep(60 - seconds % 60 + TICK_MARGIN_SECONDS)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), self.tz)

    def due(self, moment: datetime) -> list[ReportSchedule]:
        minute = moment.strftime("%Y-%m-%dT%H:%M%z")
        due = []
        for index, schedule in enumerate(self.schedules):
            if schedule.cron.matches(moment) and self._fired.get(index) != minute:
                self._fired[index] = minute
                due.append(schedule)
        return due

    async def tick(self, moment: datetime) -> list[str]:
        """Send every schedule due in ``moment``'s minute; the names of those sent."""
        due = self.due(moment)
        results = await asyncio.gather(*(self.deliver(s, moment) for s in due))
        return [s.name for s, ok in zip(due, results, strict=True) if ok]

    async def deliver(self, schedule: ReportSchedule, moment: datetime) -> bool:
        period = named_period(schedule.period, moment, self.tz)
        try:
            if not await self._claim(schedule, moment):
                log.info(
                    "report schedule %s: run %s claimed by another node; not sending",
                    schedule.name,
                    run_key(moment),
                )
                return False
            report = await asyncio.to_thread(
                report_from_store, self.store, period, schedule.group_by
            )
            daily = (
                report
                if schedule.group_by == "day"
                else await asyncio.to_thread(report_from_store, self.store, period, "day")
            )
            message = report_message(self.config, schedule, report, daily)
            await self._sender(self.config, message)
        except (MailError, OSError) as exc:
            log.error("report schedule %s: not sent: %s", schedule.name, exc)
            self._count("failed")
            return False
        except Exception:
            log.exception("report schedule %s: not sent", schedule.name)
            self._count("failed")
            return False
        log.info(
            "report schedule %s: %s sent to %s",
            schedule.name,
            period,
            ", ".join(schedule.recipients),
        )
        self._count("sent")
        return True

    async def _claim(self, schedule: ReportSchedule, moment: datetime) -> bool:
        """Claim this run in the store (once over all nodes); a store without claims: yes."""
        claim = getattr(self.store, "claim_report_run", None)
        if not callable(claim):
            return True
        return bool(await asyncio.to_thread(claim, schedule.name, run_key(moment)))

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.report_emails.labels(result).inc()
