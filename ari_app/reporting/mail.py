"""Report emails: build a message (text and HTML parts, the report attached as CSV) and send
it over SMTP
(aiosmtplib; STARTTLS or implicit TLS, AUTH when ``[smtp] username`` is set)."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from ari_app.config import Config, client_ssl_context

log = logging.getLogger(__name__)

PASSWORD_ENV = "BOTBRIDGE_SMTP_PASSWORD"


class MailError(RuntimeError):
    """The message could not be sent; the message says what the server or setup refused."""


def smtp_password(config: Config, env: Mapping[str, str] | None = None) -> str:
    """BOTBRIDGE_SMTP_PASSWORD, else the first line of ``[smtp] password_file``, else ""."""
    env = os.environ if env is None else env
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    path = config.state_path(config.smtp.password_file)
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def build_message(
    *,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    attachment_name: str,
    attachment: str,
    html: str | None = None,
) -> EmailMessage:
    """``body`` as the text part, ``html`` (when given) as its HTML alternative, and the
    attachment as a CSV file."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    message.add_attachment(
        attachment.encode("utf-8"),
        maintype="text",
        subtype="csv",
        filename=attachment_name,
    )
    return message


def tls_context(config: Config) -> ssl.SSLContext:
    """Verify the server against ``[smtp] ca_file`` (empty: the system trust store)."""
    try:
        return client_ssl_context(config, config.smtp.ca_file)
    except FileNotFoundError as exc:
        raise MailError(f"smtp.ca_file: {exc}") from exc


async def send_message(config: Config, message: EmailMessage, password: str | None = None) -> None:
    smtp = config.smtp
    if not smtp.host:
        raise MailError("no [smtp] host configured")
    username = smtp.username
    if password is None:
        password = smtp_password(config)
    if username and not password:
        raise MailError(
            f"[smtp] username is set but there is no password: set {PASSWORD_ENV} or write "
            f"it to {config.state_path(smtp.password_file)}"
        )
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=username or None,
            password=password if username else None,
            use_tls=smtp.tls,
            # True: STARTTLS is required (a server without it fails the send); False: never
            start_tls=smtp.starttls,
            tls_context=tls_context(config) if smtp.tls or smtp.starttls else None,
            timeout=float(smtp.timeout_seconds),
        )
    except aiosmtplib.SMTPException as exc:
        raise MailError(f"SMTP {smtp.host}:{smtp.port}: {exc}") from exc
    except OSError as exc:
        raise MailError(f"cannot reach SMTP server {smtp.host}:{smtp.port}: {exc}") from exc
