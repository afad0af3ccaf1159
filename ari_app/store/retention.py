"""Retention: old records, finished webhook events and report claims deleted once a day.

``[store] retention_days`` (default 400): records whose call ended longer ago than that are
deleted (open records never are). ``[store] outbox_retention_days`` (default 30): webhook
outbox rows delivered or given up longer ago than that, and ``report_runs`` claims older than
that. 0 keeps the kind forever.

One node prunes per day: every node's :func:`run_retention` wakes every
``RETENTION_CHECK_SECONDS`` and claims the day in ``report_runs`` (schedule ``retention``, run
= the UTC date), the claim scheduled reports use; the first node to insert it prunes, the
others find it taken. The claim rows of the last ``outbox_retention_days`` are kept, so a day
is never pruned twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import and_, delete, or_

from ari_app.config import Config
from ari_app.store import InteractionStore, StoreError
from ari_app.store.schema import interactions, report_runs, webhook_outbox

__all__ = ["RETENTION_CHECK_SECONDS", "RETENTION_SCHEDULE", "prune", "run_retention"]

log = logging.getLogger(__name__)

DAY_SECONDS = 86400
# how often a node checks whether today's pruning is still to do
RETENTION_CHECK_SECONDS = 3600.0
# the report_runs schedule name of the daily claim
RETENTION_SCHEDULE = "retention"


def prune(
    store: InteractionStore,
    *,
    retention_days: int,
    outbox_retention_days: int,
    max_attempts: int,
    now: float | None = None,
) -> dict[str, int]:
    """Delete what is past its retention, in one transaction; rows deleted per table."""
    now = time.time() if now is None else now
    deleted = {"interactions": 0, "webhook_outbox": 0, "report_runs": 0}
    with store.engine.begin() as db:
        if retention_days > 0:
            cutoff = now - retention_days * DAY_SECONDS
            deleted["interactions"] = db.execute(
                delete(interactions).where(
                    interactions.c.ended_at.is_not(None), interactions.c.ended_at < cutoff
                )
            ).rowcount
        if outbox_retention_days > 0:
            cutoff = now - outbox_retention_days * DAY_SECONDS
            outbox = webhook_outbox.c
            given_up = or_(outbox.given_up_at.is_not(None), outbox.attempts >= max_attempts)
            deleted["webhook_outbox"] = db.execute(
                delete(webhook_outbox).where(
                    or_(
                        outbox.delivered_at < cutoff,
                        and_(outbox.delivered_at.is_(None), given_up, outbox.created_at < cutoff),
                    )
                )
            ).rowcount
            deleted["report_runs"] = db.execute(
                delete(report_runs).where(report_runs.c.claimed_at < cutoff)
            ).rowcount
    return deleted


def prune_today(store: InteractionStore, config: Config, now: float | None = None) -> bool:
    """Claim today's pruning for this node and, if the claim is ours, prune; True if it was."""
    now = time.time() if now is None else now
    day = datetime.fromtimestamp(now, UTC).date().isoformat()
    if not store.claim_report_run(RETENTION_SCHEDULE, day):
        return False
    settings = config.store
    deleted = prune(
        store,
        retention_days=settings.retention_days,
        outbox_retention_days=settings.outbox_retention_days,
        max_attempts=config.webhooks.max_attempts,
        now=now,
    )
    log.info(
        "retention: %s deleted (records kept %d days, events and claims %d days)",
        ", ".join(f"{count} {table}" for table, count in deleted.items()),
        settings.retention_days,
        settings.outbox_retention_days,
    )
    return True


async def run_retention(store: InteractionStore, config: Config) -> None:
    """Prune once a day (one node of those sharing the store); until cancelled."""
    while True:
        try:
            await asyncio.to_thread(prune_today, store, config)
        except StoreError as exc:
            log.warning("retention: not pruned this time (%s)", type(exc).__name__)
        await asyncio.sleep(RETENTION_CHECK_SECONDS)
