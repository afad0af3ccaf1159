"""Reports of the handoff: per queue the answered rate, average speed of answer and abandon
rate (each escalation attempt counts for its own queue); per bot the escalation success rate;
the failed escalation outcome in its own column."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date
from typing import Any, cast

from ari_app.records import EscalationAttempt, Record
from ari_app.reporting.aggregation import build_report
from ari_app.reporting.periods import Period
from ari_app.reporting.rendering import render_csv, render_json, render_table

MAY = Period(date(2024, 5, 1), date(2024, 5, 1), UTC)
START = MAY.start_ts + 3600


def attempt(target: str, result: str | None, wait: float | None) -> EscalationAttempt:
    answered = START + 10 + wait if result == "answered" and wait is not None else None
    return {
        "target": target,
        "via": "refer",
        "queued_at": START + 10,
        "result": result,
        "wait_seconds": wait,
        "agent_answered_at": answered,
    }


def rec(n: int, outcome: str, bot: str, *attempts: EscalationAttempt) -> Record:
    record: dict[str, Any] = {
        "interaction_id": f"call{n}",
        "outcome": outcome,
        "profile": "default",
        "queue": attempts[-1]["target"] if attempts else None,
        "started_at": START + n,
        "bot_answered_at": START + n + 1,
        "ended_at": START + n + 60,
        "bot_uri": bot,
        "bots_tried": json.dumps([{"uri": bot, "result": "answered"}]),
        "escalations": json.dumps(list(attempts)) if attempts else None,
    }
    return cast(Record, record)


BOT_A, BOT_B = "sip:a@127.0.0.1", "sip:b@127.0.0.1"
RECORDS = [
    # timed out in the wait queue, back to bot A, answered in agents-queue after 8 s
    rec(
        1,
        "escalated",
        BOT_A,
        attempt("wait-queue", "timeout", 30.0),
        attempt("agents-queue", "answered", 8.0),
    ),
    # answered at once in agents-queue after 4 s
    rec(2, "escalated", BOT_A, attempt("agents-queue", "answered", 4.0)),
    # the caller hung up while it waited in agents-queue
    rec(3, "escalated", BOT_B, attempt("agents-queue", "caller_abandoned", 20.0)),
    # nobody in the wait queue; back to bot B, which ended the call
    rec(4, "escalation_failed", BOT_B, attempt("wait-queue", "no_agents", 0.1)),
    # still waiting: not counted in the queue figures yet
    rec(5, "escalated", BOT_B, attempt("agents-queue", None, None)),
    rec(6, "resolved", BOT_A),
]


def test_queue_figures_count_each_attempt_for_its_own_queue() -> None:
    report = build_report(RECORDS, MAY, "queue")
    rows = {row.key: row for row in report.rows}
    agents, waiting = rows["agents-queue"], rows["wait-queue"]
    # agents-queue: 3 attempts over (answered, answered, abandoned), one still waiting
    assert (agents.queue_attempts, agents.queue_answered, agents.queue_abandoned) == (3, 2, 1)
    assert agents.queue_answered_rate == 2 / 3
    assert agents.avg_speed_of_answer == 6.0
    assert agents.queue_abandon_rate == 1 / 3
    # the wait queue is a group although no call ended there
    assert (waiting.queue_attempts, waiting.queue_answered) == (2, 0)
    assert waiting.queue_answered_rate == 0.0 and waiting.avg_speed_of_answer is None
    assert report.total.queue_attempts == 5


def test_escalation_success_rate_per_bot() -> None:
    report = build_report(RECORDS, MAY, "bot")
    rows = {row.key: row for row in report.rows}
    # bot A: two calls escalated, both answered in the end; bot B: three, none answered
    assert rows[BOT_A].escalation_success_rate == 1.0
    assert rows[BOT_B].escalation_success_rate == 0.0
    assert report.total.escalated_calls == 5 and report.total.escalated_calls_answered == 2
    assert report.total.outcomes["escalation_failed"] == 1


def test_the_figures_are_in_every_format() -> None:
    report = build_report(RECORDS, MAY, "queue")
    data = json.loads(render_json(report))
    agents = next(r for r in data["rows"] if r["key"] == "agents-queue")
    assert agents["queue_answered_rate"] == 0.6667
    assert agents["avg_speed_of_answer_seconds"] == 6.0
    assert agents["queue_abandon_rate"] == 0.3333
    assert data["total"]["outcomes"]["escalation_failed"] == 1
    lines = list(csv.reader(io.StringIO(render_csv(report))))
    header, agents_line = lines[0], next(line for line in lines if line[0] == "agents-queue")
    assert agents_line[header.index("avg_speed_of_answer_seconds")] == "6.0"
    assert agents_line[header.index("escalation_failed")] == "0"
    table = render_table(report)
    assert "asa_s" in table and "escal_failed" in table
