"""The report sections: ``[reports]``, ``[http]``, ``[smtp]`` and ``[[report_schedules]]``.

See docs/reports.md for what each key does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta

from ari_app.config.cron import CronError, CronSchedule
from ari_app.config.schedule_names import GROUP_BYS, PERIODS, ReportError, timezone_named
from ari_app.config.values import (
    EMAIL,
    IP_ADDRESS,
    SINGLE_LINE,
    Port,
    Rule,
    Section,
    invalid,
    one_of,
)

DEFAULT_SUBJECT = "Bot bridge report {from} .. {to} by {group_by}"
_CRON_PROBE = datetime(2000, 1, 1)
# each report being built holds its period's records in memory: a handful, not hundreds
MAX_CONCURRENT_REPORTS = 16


def _timezone(name: str) -> str | None:
    try:
        timezone_named(name)
    except ReportError as exc:
        return str(exc)
    return None


def _cron(expression: str) -> str | None:
    try:
        CronSchedule.parse(expression).next_after(_CRON_PROBE)  # it must ever fire
    except CronError as exc:
        return str(exc)
    return None


class ReportsSettings(Section, frozen=True):
    """``[reports]``: the time zone of report days and schedule cron expressions."""

    timezone: Annotated[str, Rule(_timezone)] = "UTC"  # "UTC" or an IANA name


class HttpSettings(Section, frozen=True):
    """``[http]``: the reports/metrics HTTP server."""

    enabled: bool = True
    host: Annotated[str, IP_ADDRESS] = "127.0.0.1"
    port: Port = 8090
    token_file: Annotated[str, Meta(min_length=1)] = "http-token"  # state-relative
    # reports built at once; more requests get 503
    max_concurrent_reports: Annotated[int, Meta(ge=1, le=MAX_CONCURRENT_REPORTS)] = 2


class SmtpSettings(Section, frozen=True, rename={"sender": "from"}):
    """``[smtp]``: the mail server of scheduled reports (empty host: no mail)."""

    host: str = ""  # empty: no mail (schedules are then refused)
    port: Port = 587
    username: str = ""  # empty: no AUTH
    password_file: str = "smtp-password"  # state-relative
    starttls: bool = True
    tls: bool = False  # implicit TLS from the first byte (port 465)
    sender: Annotated[str, EMAIL] = "botbridge@localhost"  # the TOML key is `from`
    ca_file: str = ""  # state-relative; empty: the system trust store
    timeout_seconds: Annotated[int, Meta(ge=1, le=600)] = 30

    def _validate(self) -> None:
        if self.starttls and self.tls:
            raise invalid("tls", "set starttls or tls, not both")
        if self.username and not (self.starttls or self.tls):
            raise invalid(
                "username", "a username means sending a password: set starttls = true or tls = true"
            )


class ReportSchedule(Section, frozen=True):
    """One ``[[report_schedules]]`` entry, as configured (the cron expression is checked)."""

    cron: Annotated[str, Rule(_cron)]
    period: Annotated[str, one_of(PERIODS)]
    recipients: Annotated[tuple[Annotated[str, EMAIL], ...], Meta(min_length=1)]
    name: Annotated[str, SINGLE_LINE] = ""
    group_by: Annotated[str, one_of(GROUP_BYS)] = "day"
    subject: Annotated[str, Meta(min_length=1, max_length=200), SINGLE_LINE] = DEFAULT_SUBJECT


def check_schedules(schedules: tuple[ReportSchedule, ...], smtp: SmtpSettings) -> None:
    """Cross-section rule: schedules need a mail server."""
    if schedules and not smtp.host:
        raise invalid("report_schedules", "report schedules need an [smtp] host")
