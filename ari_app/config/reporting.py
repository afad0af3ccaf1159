"""Configuration sections for reports: ``[reports]``, ``[http]``, ``[smtp]`` and
``[[report_schedules]]`` (marshmallow schemas used by ``config._ConfigSchema``).

See docs/reports.md for what each key does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ari_app.reporting.cron import CronError, CronSchedule
from ari_app.reporting.reports import GROUP_BYS, PERIODS, ReportError, timezone_named

_NO_LINE_BREAKS = validate.Regexp(r"^[^\r\n]*$", error="must be a single line")
DEFAULT_SUBJECT = "Bot bridge report {from} .. {to} by {group_by}"
_CRON_PROBE = datetime(2000, 1, 1)


class ReportsSchema(Schema):
    # the time zone that report days and schedule cron expressions are in
    timezone = fields.Str(required=True)

    @validates_schema
    def _timezone(self, data: dict[str, Any], **_: Any) -> None:
        try:
            timezone_named(data["timezone"])
        except ReportError as exc:
            raise ValidationError(str(exc), "timezone") from exc


class HttpSchema(Schema):
    enabled = fields.Bool(required=True)
    host = fields.IP(required=True)
    port = fields.Int(required=True, validate=validate.Range(1, 65535))
    token_file = fields.Str(required=True, validate=validate.Length(min=1))


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


def check_schedules(data: dict[str, Any]) -> None:
    """Cross-section rule: schedules need a mail server."""
    if data.get("report_schedules") and not data.get("smtp", {}).get("host"):
        raise ValidationError("report schedules need an [smtp] host", "report_schedules")
