"""Configuration sections for reports: ``[reports]``, ``[http]``, ``[smtp]`` and
``[[report_schedules]]``: marshmallow schemas used by ``config._ConfigSchema``, each loading
into a frozen dataclass (``ReportsSettings``, ``HttpSettings``, ``SmtpSettings``,
``ReportSchedule``).

See docs/reports.md for what each key does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from ari_app.reporting.cron import CronError, CronSchedule
from ari_app.reporting.periods import GROUP_BYS, PERIODS, ReportError, timezone_named

_NO_LINE_BREAKS = validate.Regexp(r"^[^\r\n]*$", error="must be a single line")
DEFAULT_SUBJECT = "Bot bridge report {from} .. {to} by {group_by}"
_CRON_PROBE = datetime(2000, 1, 1)
# each report being built holds its period's records in memory: a handful, not hundreds
MAX_CONCURRENT_REPORTS = 16


@dataclass(frozen=True)
class ReportsSettings:
    """``[reports]``."""

    timezone: str  # "UTC" or an IANA name (checked at load)


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the reports/metrics HTTP server."""

    enabled: bool
    host: IPv4Address | IPv6Address
    port: int
    token_file: str  # state-relative
    max_concurrent_reports: int  # reports built at once; more requests get 503


@dataclass(frozen=True)
class SmtpSettings:
    """``[smtp]``: the mail server of scheduled reports (empty host: no mail)."""

    host: str
    port: int
    username: str
    password_file: str  # state-relative
    starttls: bool
    tls: bool  # implicit TLS from the first byte (port 465)
    sender: str  # the TOML key is `from`
    ca_file: str  # state-relative; empty: the system trust store
    timeout_seconds: int


@dataclass(frozen=True)
class ReportSchedule:
    """One ``[[report_schedules]]`` entry, as configured (the cron expression is checked)."""

    name: str
    cron: str
    period: str
    group_by: str
    recipients: tuple[str, ...]
    subject: str


class ReportsSchema(Schema):
    # the time zone that report days and schedule cron expressions are in
    timezone = fields.Str(required=True)

    @validates_schema
    def _timezone(self, data: dict[str, Any], **_: Any) -> None:
        try:
            timezone_named(data["timezone"])
        except ReportError as exc:
            raise ValidationError(str(exc), "timezone") from exc

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ReportsSettings:
        return ReportsSettings(**data)


class HttpSchema(Schema):
    enabled = fields.Bool(required=True)
    host = fields.IP(required=True)
    port = fields.Int(required=True, validate=validate.Range(1, 65535))
    token_file = fields.Str(required=True, validate=validate.Length(min=1))
    max_concurrent_reports = fields.Int(
        required=True, validate=validate.Range(1, MAX_CONCURRENT_REPORTS)
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> HttpSettings:
        return HttpSettings(**data)


class SmtpSchema(Schema):
    host = fields.Str(required=True)  # empty: no mail (schedules are then refused)
    port = fields.Int(required=True, validate=validate.Range(1, 65535))
    username = fields.Str(required=True)
    password_file = fields.Str(required=True)
    starttls = fields.Bool(required=True)
    tls = fields.Bool(required=True)  # implicit TLS from the first byte (port 465)
    sender = fields.Email(required=True, data_key="from")
    ca_file = fields.Str(required=True)
    timeout_seconds = fields.Int(required=True, validate=validate.Range(1, 600))

    @validates_schema
    def _tls(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("starttls") and data.get("tls"):
            raise ValidationError("set starttls or tls, not both", "tls")
        if data.get("username") and not (data.get("starttls") or data.get("tls")):
            raise ValidationError(
                "a username means sending a password: set starttls = true or tls = true",
                "username",
            )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> SmtpSettings:
        return SmtpSettings(**data)


class ReportScheduleSchema(Schema):
    name = fields.Str(load_default="", validate=_NO_LINE_BREAKS)
    cron = fields.Str(required=True)
    period = fields.Str(required=True, validate=validate.OneOf(PERIODS))
    group_by = fields.Str(load_default="day", validate=validate.OneOf(GROUP_BYS))
    recipients = fields.List(fields.Email(), required=True, validate=validate.Length(min=1))
    subject = fields.Str(
        load_default=DEFAULT_SUBJECT, validate=[validate.Length(1, 200), _NO_LINE_BREAKS]
    )

    @validates_schema
    def _cron(self, data: dict[str, Any], **_: Any) -> None:
        if "cron" not in data:
            return
        try:
            CronSchedule.parse(data["cron"]).next_after(_CRON_PROBE)  # it must ever fire
        except CronError as exc:
            raise ValidationError(str(exc), "cron") from exc

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ReportSchedule:
        return ReportSchedule(**{**data, "recipients": tuple(data["recipients"])})


def check_schedules(data: dict[str, Any]) -> None:
    """Cross-section rule: schedules need a mail server (``data``: the loaded sections)."""
    smtp = data.get("smtp")
    if data.get("report_schedules") and not (smtp and smtp.host):
        raise ValidationError("report schedules need an [smtp] host", "report_schedules")
