"""Retention (ari_app/store/retention.py): what is past its days is deleted once a day by one
node; open records, recent rows and events still to deliver are kept."""

from __future__ import annotations

import time
from pathlib import Path

from ari_app.config import load_config
from ari_app.store import InteractionStore
from ari_app.store.retention import DAY_SECONDS, prune, prune_today
from tests.records import create

NOW = time.time()
OLD = NOW - 401 * DAY_SECONDS


def fill(store: InteractionStore) -> None:
    for iid, started, ended in (
        ("old-ended", OLD, OLD + 60),
        ("old-open", OLD, None),
        ("recent", NOW - DAY_SECONDS, NOW - DAY_SECONDS + 60),
    ):
        create(
            store, iid, profile="default", caller_channel=iid, started_at=started, ended_at=ended
        )
    store.write_batch(
        {},
        {iid: {"outcome": "escalated"} for iid in ("old-ended", "old-open", "recent")},
        webhook_urls=("http://127.0.0.1:9/",),
        webhook_outcomes=("escalated",),
    )
    month = 31 * DAY_SECONDS
    url = "http://127.0.0.1:9/"
    delivered, given_up, _pending = sorted(e["event_id"] for e in store.webhook_events())
    store.webhook_attempted(
        delivered, url, attempts=1, delivered_at=NOW - month, next_attempt_at=NOW, error=None
    )
    store.webhook_attempted(
        given_up,
        url,
        attempts=12,
        delivered_at=None,
        next_attempt_at=NOW,
        error="HTTP 500",
        given_up=True,
    )
    assert store.claim_report_run("daily", "2000-01-01T06:00")


def test_prune_deletes_only_what_is_past_its_days(store: InteractionStore) -> None:
    fill(store)
    with store.engine.begin() as db:  # the events and the claim were made a month ago
        db.exec_driver_sql("UPDATE webhook_outbox SET created_at = created_at - 2678400")
        db.exec_driver_sql("UPDATE report_runs SET claimed_at = claimed_at - 2678400")
    deleted = prune(store, retention_days=400, outbox_retention_days=30, max_attempts=12, now=NOW)
    assert deleted == {"interactions": 1, "webhook_outbox": 2, "report_runs": 1}
    assert sorted(r["interaction_id"] for r in store.all()) == ["old-open", "recent"]
    [left] = store.webhook_events()
    assert left["delivered_at"] is None and left["given_up_at"] is None  # still to deliver
    assert store.report_run_claims() == []


def test_zero_days_keeps_everything(store: InteractionStore) -> None:
    fill(store)
    deleted = prune(store, retention_days=0, outbox_retention_days=0, max_attempts=12, now=NOW)
    assert deleted == {"interactions": 0, "webhook_outbox": 0, "report_runs": 0}
    assert len(store.all()) == 3


def test_given_up_events_leave_the_senders_poll(store: InteractionStore) -> None:
    fill(store)
    due = store.due_webhooks(
        time.time() + 1, max_attempts=1000, limit=10
    )  # even with more attempts allowed
    assert [e["given_up_at"] for e in due] == [None]


def test_two_nodes_prune_a_day_once(database_url: str, tmp_path: Path) -> None:
    env = {"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STATE_DIR": str(tmp_path)}
    config = load_config(env=env)
    a = InteractionStore(database_url, node="a")
    b = InteractionStore(database_url, node="b", migrate=False)
    try:
        fill(a)
        assert [prune_today(s, config, NOW) for s in (a, b, a)] == [True, False, False]
        assert "old-ended" not in {r["interaction_id"] for r in b.all()}
        assert prune_today(b, config, NOW + DAY_SECONDS) is True  # the next day
    finally:
        a.close()
        b.close()
