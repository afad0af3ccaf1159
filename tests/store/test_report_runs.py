"""Scheduled reports with several nodes on one store: each run is mailed once.

Two schedulers (two nodes, each with its own store connection and node name) share one
database, SQLite and a real PostgreSQL server; both tick the same minute at the same time.
The sender is faked (the SMTP path is tests/integration/test_report_email.py); the claim is
the store's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from ari_app.config import Config, load_config
from ari_app.reporting.scheduler import ReportScheduler, run_key
from ari_app.store import InteractionStore
from tests.records import create

SCHEDULES = """
[smtp]
host = "127.0.0.1"
from = "reports@example.com"

[[report_schedules]]
name = "daily"
cron = "0 7 * * *"
period = "previous_day"
group_by = "node"
recipients = ["sup@example.com"]

[[report_schedules]]
name = "hourly"
cron = "0 * * * *"
period = "previous_day"
recipients = ["ops@example.com"]
"""
SEVEN = datetime(2024, 5, 8, 7, 0, tzinfo=UTC)
EIGHT = datetime(2024, 5, 8, 8, 0, tzinfo=UTC)


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def __call__(self, config: Config, message: EmailMessage) -> None:
        self.sent.append(message)


def _config(tmp_path: Path) -> Config:
    path = tmp_path / "botbridge.toml"
    path.write_text(SCHEDULES)
    return load_config(path, env={"BOTBRIDGE_STATE_DIR": str(tmp_path)})


async def test_two_nodes_send_each_run_once(database_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path)
    stores = [InteractionStore(database_url, node=f"node-{n}") for n in (1, 2)]
    try:
        yesterday = datetime(2024, 5, 7, 9, 0, tzinfo=UTC).timestamp()
        create(stores[0], "a", profile="default", caller_channel="c1", started_at=yesterday)
        create(stores[1], "b", profile="default", caller_channel="c2", started_at=yesterday)
        outboxes = [_Outbox(), _Outbox()]
        schedulers = [
            ReportScheduler(config, store, sender=outbox)
            for store, outbox in zip(stores, outboxes, strict=True)
        ]

        sent_at_seven = await asyncio.gather(*(s.tick(SEVEN) for s in schedulers))
        # both schedules fire at 07:00; each is sent by exactly one of the two nodes
        assert sorted(name for names in sent_at_seven for name in names) == ["daily", "hourly"]
        mails = [m for outbox in outboxes for m in outbox.sent]
        assert sorted(m["To"] for m in mails) == ["ops@example.com", "sup@example.com"]
        # the report of either node covers both nodes' calls
        daily = next(m for m in mails if m["To"] == "sup@example.com")
        attachment = next(iter(daily.iter_attachments())).get_content()
        assert "node-1" in attachment and "node-2" in attachment, attachment

        sent_at_eight = await asyncio.gather(*(s.tick(EIGHT) for s in schedulers))
        assert sorted(name for names in sent_at_eight for name in names) == ["hourly"]
        assert sum(len(o.sent) for o in outboxes) == 3

        claims = stores[0].report_run_claims()
        assert sorted((c["schedule"], c["run"]) for c in claims) == [
            ("daily", run_key(SEVEN)),
            ("hourly", run_key(SEVEN)),
            ("hourly", run_key(EIGHT)),
        ]
        assert {c["node"] for c in claims} <= {"node-1", "node-2"}
        # a node restarted within the minute (its in-memory "fired" forgotten) sends nothing
        restarted = ReportScheduler(config, stores[1], sender=outboxes[1])
        assert await restarted.tick(SEVEN) == []
        assert sum(len(o.sent) for o in outboxes) == 3
    finally:
        for store in stores:
            store.close()


def test_a_claim_is_taken_once(database_url: str) -> None:
    first = InteractionStore(database_url, node="node-1")
    second = InteractionStore(database_url, node="node-2")
    try:
        assert first.claim_report_run("daily", "2024-05-08T07:00Z")
        assert not second.claim_report_run("daily", "2024-05-08T07:00Z")
        assert second.claim_report_run("daily", "2024-05-09T07:00Z")
        assert [c["node"] for c in first.report_run_claims()] == ["node-1", "node-2"]
    finally:
        first.close()
        second.close()
