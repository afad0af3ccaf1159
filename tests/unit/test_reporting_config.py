"""The [reports], [http], [smtp] and [[report_schedules]] configuration sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_app.config import Config, ConfigError, load_config
from ari_app.config.reporting import (
    DEFAULT_SUBJECT,
    HttpSettings,
    ReportSchedule,
    ReportsSettings,
    SmtpSettings,
)

SMTP = '[smtp]\nhost = "127.0.0.1"\n'
SCHEDULE = """
[[report_schedules]]
cron = "0 7 * * *"
period = "previous_day"
recipients = ["a@example.com", "b@example.com"]
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BOTBRIDGE_STATE_DIR": str(tmp_path / "state"), **extra}


def _load(tmp_path: Path, text: str = "", **env: str) -> Config:
    path = tmp_path / "botbridge.toml"
    path.write_text(text)
    return load_config(path, env=_env(tmp_path, **env))


def test_defaults(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    assert config.reports == ReportsSettings(timezone="UTC")
    assert config.http == HttpSettings(
        enabled=True,
        host="127.0.0.1",
        port=8090,
        token_file="http-token",
        max_concurrent_reports=2,
    )
    assert config.smtp == SmtpSettings(
        host="",
        port=587,
        username="",
        password_file="smtp-password",
        starttls=True,
        tls=False,
        sender="botbridge@localhost",
        ca_file="",
        timeout_seconds=30,
    )
    assert config.report_schedules == ()


def test_env_overrides(tmp_path: Path) -> None:
    config = load_config(
        env=_env(
            tmp_path,
            BOTBRIDGE_HTTP_PORT="18090",
            BOTBRIDGE_HTTP_HOST="0.0.0.0",
            BOTBRIDGE_HTTP_ENABLED="false",
            BOTBRIDGE_SMTP_HOST="mail.example.com",
            BOTBRIDGE_SMTP_PORT="465",
            BOTBRIDGE_REPORTS_TIMEZONE="Europe/Paris",
        )
    )
    assert config.http.port == 18090
    assert config.http.host == "0.0.0.0"
    assert config.http.enabled is False
    assert config.smtp.host == "mail.example.com" and config.smtp.port == 465
    assert config.reports.timezone == "Europe/Paris"


def test_a_schedule(tmp_path: Path) -> None:
    config = _load(tmp_path, SMTP + SCHEDULE)
    (schedule,) = config.report_schedules
    assert schedule == ReportSchedule(
        name="",
        cron="0 7 * * *",
        period="previous_day",
        group_by="day",
        recipients=("a@example.com", "b@example.com"),
        subject=DEFAULT_SUBJECT,
    )


def test_smtp_from_key(tmp_path: Path) -> None:
    config = _load(tmp_path, '[smtp]\nfrom = "reports@example.com"\n')
    assert config.smtp.sender == "reports@example.com"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SMTP + SCHEDULE.replace("0 7 * * *", "0 25 * * *"), "Bad hour"),
        (SMTP + SCHEDULE.replace("0 7 * * *", "daily"), "5 fields"),
        (SMTP + SCHEDULE.replace("0 7 * * *", "0 0 31 2 *"), "Bad day-of-month"),
        (SMTP + SCHEDULE.replace("previous_day", "yesterday"), "report_schedules.0.period"),
        (SMTP + SCHEDULE.replace("a@example.com", "not an address"), "recipients"),
        (SMTP + SCHEDULE.replace('["a@example.com", "b@example.com"]', "[]"), "recipients"),
        (SMTP + SCHEDULE + 'group_by = "team"\n', "report_schedules.0.group_by"),
        (SMTP + SCHEDULE + 'subject = "a\\r\\nBcc: x@example.com"\n', "single line"),
        (SCHEDULE, "report schedules need an [smtp] host"),
        ('[smtp]\nusername = "u"\nstarttls = false\n', "set starttls = true or tls = true"),
        ("[smtp]\nstarttls = true\ntls = true\n", "not both"),
        ('[smtp]\nfrom = "nobody"\n', "smtp.from"),
        ("[http]\nport = 0\n", "http.port"),
        ('[http]\nhost = "localhost"\n', "http.host"),
        ('[reports]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
    ],
)
def test_invalid(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, text)
