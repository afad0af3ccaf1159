"""Scheduled report emails through a real SMTP server on loopback (aiosmtpd) that requires
STARTTLS (a self-signed certificate made in-process) and AUTH, and keeps what it gets."""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import gc
import io
import re
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from msgspec.structs import replace

from ari_app.asterisk import make_self_signed
from ari_app.config import Config, load_config
from ari_app.reporting.aggregation import build_report
from ari_app.reporting.mail import MailError, build_message, send_message
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.periods import Period
from ari_app.reporting.rendering import render_csv
from ari_app.reporting.report_html import BAR_COLOUR, LINE_COLOUR
from ari_app.reporting.scheduler import ReportScheduler
from ari_app.store import InteractionStore
from devtools.stack import free_port
from tests.integration.test_report_page_browser import HEADLESS_FLAGS, read_png
from tests.records import create, update
from tests.tools import require_tool

pytestmark = pytest.mark.integration

USER, PASSWORD = "reports", "correct horse battery staple"
RECIPIENTS = ["supervisor@example.com", "ops@example.com"]
FIRE_AT = datetime(2024, 5, 8, 7, 0, tzinfo=UTC)  # the schedule's minute
YESTERDAY = datetime(2024, 5, 7, 10, 0, tzinfo=UTC).timestamp()


@dataclass
class Received:
    envelope: Envelope
    tls: bool
    login: bytes | None

    @property
    def message(self) -> EmailMessage:
        assert isinstance(self.envelope.content, bytes)
        parsed = email.message_from_bytes(self.envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[bytes, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        login = session.auth_data if isinstance(session.auth_data, bytes) else None
        self.received.append(Received(envelope, session.ssl is not None, login))
        return "250 kept"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == USER.encode()
            and data.password == PASSWORD.encode()
        )
        self.logins.append((data.login if isinstance(data, LoginPassword) else b"", ok))
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


@dataclass
class SmtpServer:
    port: int
    cert: Path
    mailbox: Mailbox


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    cert, key = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    make_self_signed(cert, key)  # CN and subjectAltName 127.0.0.1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=mailbox.authenticate,
    )
    controller.start()
    try:
        yield SmtpServer(port, cert, mailbox)
    finally:
        controller.stop()


def _config(tmp_path: Path, server: SmtpServer, *, ca_file: str | None = None) -> Config:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "smtp-password").write_text(PASSWORD + "\n")
    toml = tmp_path / "botbridge.toml"
    toml.write_text(
        f"""
[smtp]
host = "127.0.0.1"
port = {server.port}
username = "{USER}"
starttls = true
from = "botbridge@example.com"
ca_file = "{ca_file if ca_file is not None else server.cert}"
timeout_seconds = 10

[[report_schedules]]
name = "daily-supervisors"
cron = "0 7 * * *"
period = "previous_day"
group_by = "queue"
recipients = {RECIPIENTS!r}
subject = "Contact centre bots {{from}}"
""".replace("'", '"')
    )
    return load_config(toml, env={"BOTBRIDGE_STATE_DIR": str(state)})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InteractionStore]:
    store = InteractionStore(tmp_path / "interactions.sqlite3")
    calls = [
        ("a", "escalated", "agents-queue", "agents-queue"),
        ("b", "escalated", "billing-queue", "billing"),
        ("c", "resolved", None, None),
        ("d", "bot_failed", "agents-queue", None),
    ]
    for i, (iid, outcome, queue, target) in enumerate(calls):
        start = YESTERDAY + 60 * i
        create(store, iid, profile="default", caller_channel=iid, started_at=start)
        update(
            store,
            iid,
            state=outcome,
            outcome=outcome,
            queue=queue,
            escalate_to=target,
            bot_answered_at=None if outcome == "bot_failed" else start + 1,
            transfer_at=start + 31 if outcome == "escalated" else None,
            ended_at=start + 40,
        )
    create(store, "today", profile="default", caller_channel="t", started_at=FIRE_AT.timestamp())
    yield store
    store.close()


async def test_scheduled_report_arrives_over_starttls_with_auth(
    tmp_path: Path, smtp_server: SmtpServer, store: InteractionStore
) -> None:
    config = _config(tmp_path, smtp_server)
    metrics = Metrics(process=False)
    scheduler = ReportScheduler(config, store, metrics=metrics, clock=lambda: FIRE_AT.timestamp())
    assert await scheduler.tick(FIRE_AT) == ["daily-supervisors"]

    (got,) = smtp_server.mailbox.received
    assert got.tls, "the message must travel after STARTTLS"
    assert got.login == USER.encode()
    assert smtp_server.mailbox.logins == [(USER.encode(), True)]
    assert got.envelope.mail_from == "botbridge@example.com"
    assert got.envelope.rcpt_tos == RECIPIENTS
    message = got.message
    assert message["Subject"] == "Contact centre bots 2024-05-07"
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message["From"] == "botbridge@example.com"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_filename() == "botbridge-report-2024-05-07-2024-05-07-queue.csv"
    content = attachment.get_content()
    assert isinstance(content, str)
    expected = build_report(store.all(), Period.parse("2024-05-07", "2024-05-07"), "queue")
    assert content == render_csv(expected)
    rows = {r["queue"]: r for r in csv.DictReader(io.StringIO(content))}
    assert list(rows) == ["(none)", "agents-queue", "billing-queue", "(total)"]
    assert rows["(total)"]["total"] == "4"  # today's call is not in yesterday's report
    assert rows["(total)"]["escalated"] == "2"
    assert rows["(total)"]["containment_rate"] == "0.3333"
    assert rows["(total)"]["escalation_targets"] == "agents-queue=1;billing=1"
    assert rows["agents-queue"]["bot_failed"] == "1"
    assert metrics.report_emails.labels("sent")._value.get() == 1


def _message() -> EmailMessage:
    return build_message(
        sender="botbridge@example.com",
        recipients=["a@example.com"],
        subject="s",
        body="b",
        attachment_name="r.csv",
        attachment="a,b\r\n",
    )


async def test_wrong_password_is_refused(tmp_path: Path, smtp_server: SmtpServer) -> None:
    config = _config(tmp_path, smtp_server)
    with pytest.raises(MailError, match="535"):
        await send_message(config, _message(), password="wrong")
    assert smtp_server.mailbox.received == []
    # the client may try more than one mechanism (PLAIN, LOGIN): every try failed
    assert smtp_server.mailbox.logins
    assert all(login == (USER.encode(), False) for login in smtp_server.mailbox.logins)


# aiosmtplib drops the transport of a failed STARTTLS handshake without closing its socket;
# the ResourceWarning comes from the garbage collector, so it is collected here (not in a
# later test) and only this kind is let through
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_untrusted_certificate_is_refused(tmp_path: Path, smtp_server: SmtpServer) -> None:
    config = _config(tmp_path, smtp_server, ca_file="")  # the system trust store
    with pytest.raises(MailError, match=r"(?i)certificate"):
        await send_message(config, _message())
    gc.collect()
    assert smtp_server.mailbox.logins == []  # the password never left
    assert smtp_server.mailbox.received == []


async def test_no_starttls_means_no_mail(tmp_path: Path, smtp_server: SmtpServer) -> None:
    config = _config(tmp_path, smtp_server)
    plain = replace(config, smtp=replace(config.smtp, starttls=False, username=""))
    with pytest.raises(MailError, match=r"(?i)starttls|530"):
        await send_message(plain, _message())
    assert smtp_server.mailbox.received == []


async def test_report_email_html_renders_in_chromium(
    tmp_path: Path, smtp_server: SmtpServer, store: InteractionStore
) -> None:
    """The HTML part of a delivered report email, rendered by headless Chromium: the headline
    figures are in the rendered document, and the chart's bars and line are on screen."""
    require_tool("chromium")  # fails, saying how to install it, before a mail is sent
    config = _config(tmp_path, smtp_server)
    scheduler = ReportScheduler(config, store, clock=lambda: FIRE_AT.timestamp())
    assert await scheduler.tick(FIRE_AT) == ["daily-supervisors"]
    (got,) = smtp_server.mailbox.received
    message = got.message
    text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert text_part is not None and html_part is not None
    assert "Interaction report 2024-05-07" in text_part.get_content()  # the text table is kept
    assert [a.get_filename() for a in message.iter_attachments()] == [
        "botbridge-report-2024-05-07-2024-05-07-queue.csv"
    ]
    html = html_part.get_content()
    assert "<svg" in html and "src=" not in html and "href=" not in html  # nothing to fetch
    page = tmp_path / "email.html"
    page.write_text(html)
    expected = build_report(store.all(), Period.parse("2024-05-07", "2024-05-07"), "queue")

    dom = await _chromium(tmp_path, "--dump-dom", page.as_uri())
    cards = dict(
        (label, value)
        for value, label in re.findall(r'<div class="v">([^<]*)</div><div class="k">([^<]*)<', dom)
    )
    assert cards["interactions"] == str(expected.total.total) == "4"
    assert cards["escalated"] == "2"
    assert cards["containment rate"] == "33.3%"
    assert cards["bot failure rate"] == "25.0%"
    assert "billing-queue" in dom and "agents-queue" in dom  # the grouped table

    screenshot = tmp_path / "email.png"
    await _chromium(tmp_path, f"--screenshot={screenshot}", page.as_uri())
    width, height, rows = read_png(screenshot)
    assert (width, height) == (EMAIL_WIDTH, EMAIL_HEIGHT)
    pixels: Counter[bytes] = Counter()
    for row in rows:
        pixels.update(row[i : i + 3] for i in range(0, len(row), 3))
    assert pixels.most_common(1)[0][1] / (width * height) < 0.9, "a blank email?"
    assert pixels[bytes.fromhex(BAR_COLOUR[1:])] > 200, "no escalation bar on screen"
    assert pixels[bytes.fromhex(LINE_COLOUR[1:])] > 20, "no containment point on screen"


EMAIL_WIDTH, EMAIL_HEIGHT = 1200, 900
BROWSER_TIMEOUT = 120.0


async def _chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with ``args`` offline; its stdout (``--dump-dom``: the DOM)."""
    browser = await asyncio.create_subprocess_exec(
        require_tool("chromium"),
        *HEADLESS_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={EMAIL_WIDTH},{EMAIL_HEIGHT}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(browser.communicate(), BROWSER_TIMEOUT)
    except TimeoutError:
        browser.kill()
        await browser.wait()
        raise
    assert browser.returncode == 0, err.decode(errors="replace")
    return out.decode(errors="replace")
