"""Webhook delivery: interaction events from the durable outbox, signed, retried with backoff.

The record writer puts an event into the store's ``webhook_outbox`` in the same transaction
as the record change that made it (ari_app/store/writer.py). This sender, a side service of
``ari-app run``, takes due events, POSTs each body to its URL with aiohttp and marks it
delivered on a 2xx answer; any other answer, a time-out or a refused connection schedules
the next attempt after ``min(backoff_initial_seconds * 2^(n-1), backoff_max_seconds)``,
until ``max_attempts``. It never runs on a call's path: a slow or dead receiver delays only
its own events. Delivery is at least once (a crash between the POST and the mark sends the
event again); every request carries the event id, by which a receiver drops repeats.

Signature (docs/webhooks.md): ``X-Botbridge-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256 over ``<t>.<body>`` with the shared secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from ari_app.config import Config, WebhookSettings, mask_url, read_secret_file
from ari_app.store import InteractionStore, StoreError

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "WebhookSender",
    "backoff_seconds",
    "sign",
    "verify",
    "webhook_secret",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Botbridge-Signature"
EVENT_ID_HEADER = "X-Botbridge-Event-Id"
EVENT_HEADER = "X-Botbridge-Event"
WEBHOOK_SECRET_BYTES = 32
# a claimed event is another sender's for the delivery time-out plus this margin
CLAIM_MARGIN_SECONDS = 5.0
# how much of a receiver's error answer is kept in the outbox's last_error
ERROR_TEXT_CHARS = 200


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: bytes, header: str | bytes, body: bytes, *, now: float, tolerance: float
) -> bool:
    """A receiver's check (docs/webhooks.md): signature matches, timestamp recent enough.

    False, never an exception, for any header that is not a valid signature: missing parts,
    a timestamp that is not decimal ASCII digits, a digest of the wrong length or not hex,
    non-ASCII text. The digests are compared as bytes, in constant time.
    """
    if isinstance(header, bytes):
        header = header.decode("ascii", errors="replace")
    parts = dict(item.strip().split("=", 1) for item in header.split(",") if "=" in item)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not (stamp.isascii() and stamp.isdigit() and given.isascii()):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:  # more digits than int() converts
        return False
    # int-float comparisons are exact in Python: a huge timestamp cannot overflow a float
    if not now - tolerance <= timestamp <= now + tolerance:
        return False
    expected = hmac.new(secret, stamp.encode("ascii") + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest().encode("ascii"), given.encode("ascii"))


def backoff_seconds(settings: WebhookSettings, attempts: int) -> float:
    """Wait after the ``attempts``-th failed attempt (1, 2, ...) before the next one."""
    delay = settings.backoff_initial_seconds * 2 ** max(attempts - 1, 0)
    return float(min(delay, settings.backoff_max_seconds))


def webhook_secret(config: Config, env: Mapping[str, str] | None = None) -> bytes:
    """``BOTBRIDGE_WEBHOOK_SECRET``, else ``[webhooks] secret_file`` (made when absent)."""
    env = os.environ if env is None else env
    if env.get("BOTBRIDGE_WEBHOOK_SECRET"):
        return env["BOTBRIDGE_WEBHOOK_SECRET"].encode()
    path = config.state_path(config.webhooks.secret_file)
    return read_secret_file(path, WEBHOOK_SECRET_BYTES, "webhooks.secret_file").encode()


class WebhookSender:
    """Delivers the outbox's due events until cancelled; one instance per app process."""

    def __init__(self, settings: WebhookSettings, store: InteractionStore, secret: bytes) -> None:
        self.settings = settings
        self.store = store
        self.secret = secret
        self.delivered = 0
        self.failed_attempts = 0
        self.given_up = 0

    def counts(self) -> dict[str, int]:
        """Attempts by result, for the metrics (``given_up`` attempts also count as failed)."""
        return {
            "delivered": self.delivered,
            "failed": self.failed_attempts,
            "given_up": self.given_up,
        }

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    sent = await self.deliver_due(http)
                except StoreError:
                    log.exception("webhook outbox unreadable; trying again")
                    sent = 0
                if sent < self.settings.batch_size:  # a full batch: more may be due at once
                    await asyncio.sleep(self.settings.poll_interval_seconds)

    async def deliver_due(self, http: aiohttp.ClientSession) -> int:
        """One round: claim the due events and send them concurrently; how many were tried."""
        now = time.time()
        due = await asyncio.to_thread(
            self.store.due_webhooks, now, self.settings.max_attempts, self.settings.batch_size
        )
        until = now + self.settings.timeout_seconds + CLAIM_MARGIN_SECONDS
        mine = []
        for row in due:
            if await asyncio.to_thread(
                self.store.claim_webhook, row["event_id"], row["url"], now, until
            ):
                mine.append(row)
        await asyncio.gather(*(self._deliver(http, row) for row in mine))
        return len(mine)

    async def _deliver(self, http: aiohttp.ClientSession, row: Mapping[str, Any]) -> None:
        body = row["body"].encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: row["event_id"],
            EVENT_HEADER: f"interaction.{row['event']}",
            SIGNATURE_HEADER: sign(self.secret, int(time.time()), body),
        }
        attempts = row["attempts"] + 1
        error: str | None = None
        try:
            async with http.post(row["url"], data=body, headers=headers) as response:
                if not 200 <= response.status < 300:
                    text = (await response.text(errors="replace"))[:ERROR_TEXT_CHARS]
                    error = f"HTTP {response.status} {text}".strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_CHARS]
        shown = mask_url(row["url"])  # the URL may hold credentials: never in logs
        if error is not None:
            error = error.replace(row["url"], shown)
        now = time.time()
        if error is None:
            self.delivered += 1
            await asyncio.to_thread(
                self.store.webhook_attempted,
                row["event_id"],
                row["url"],
                attempts=attempts,
                delivered_at=now,
                next_attempt_at=now,
                error=None,
            )
            log.info("webhook %s delivered to %s", row["event_id"], shown)
            return
        self.failed_attempts += 1
        if attempts >= self.settings.max_attempts:
            self.given_up += 1
            log.error(
                "webhook %s to %s given up after %d attempts (%s); it stays in the outbox",
                row["event_id"],
                shown,
                attempts,
                error,
            )
        else:
            log.warning(
                "webhook %s to %s failed (attempt %d: %s); next in %.1f s",
                row["event_id"],
                shown,
                attempts,
                error,
                backoff_seconds(self.settings, attempts),
            )
        await asyncio.to_thread(
            self.store.webhook_attempted,
            row["event_id"],
            row["url"],
            attempts=attempts,
            delivered_at=None,
            next_attempt_at=now + backoff_seconds(self.settings, attempts),
            error=error,
            given_up=attempts >= self.settings.max_attempts,
        )
