"""``GET /interactions/{id}``: the handoff an agent desktop pulls (token, 404, the view)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ari_app.config import load_config
from ari_app.reporting.interaction import interaction_view
from ari_app.reporting.metrics import Metrics
from ari_app.reporting.web import WebSettings, create_web_app

TOKEN = "t" * 43
IID = "0123456789abcdef0123456789abcdef"
ATTEMPTS = [
    {
        "target": "handoff-empty",
        "via": "refer",
        "queued_at": 1003.0,
        "result": "timeout",
        "wait_seconds": 4.0,
        "agent_answered_at": None,
    },
    {
        "target": "agents-queue",
        "via": "refer",
        "queued_at": 1012.0,
        "result": "answered",
        "wait_seconds": 1.5,
        "agent_answered_at": 1013.5,
    },
]
RECORD: dict[str, Any] = {
    "interaction_id": IID,
    "state": "queued",
    "outcome": "escalated",
    "profile": "default",
    "caller_number": "15550001111",
    "queue": "agents-queue",
    "context_json": json.dumps({"escalate_to": "agents-queue"}),
    "started_at": 1000.0,
    "bot_answered_at": 1001.0,
    "transfer_at": 1011.5,
    "bot_ended_at": 1011.5,
    "agent_answered_at": 1013.5,
    "ended_at": 1020.0,
    "bot_seconds": 9.5,
    "bot_dialogs": 2,
    "escalations": json.dumps(ATTEMPTS),
}


def test_the_view_has_context_bot_time_attempts_and_an_ordered_timeline() -> None:
    view = interaction_view(RECORD)
    assert view["context"] == {"escalate_to": "agents-queue"}
    assert (view["bot_seconds"], view["bot_dialogs"]) == (9.5, 2)
    assert view["escalations"] == ATTEMPTS
    events = [(m["at"], m["event"]) for m in view["timeline"]]
    assert events == [
        (1000.0, "call_started"),
        (1001.0, "bot_answered"),
        (1003.0, "queued"),
        (1007.0, "escalation_timeout"),
        (1011.5, "transfer_requested"),
        (1011.5, "bot_ended"),
        (1012.0, "queued"),
        (1013.5, "agent_answered"),
        (1020.0, "call_ended"),
    ]


def test_a_record_without_attempts_still_shows_the_agents_answer() -> None:
    view = interaction_view({"interaction_id": IID, "started_at": 1.0, "agent_answered_at": 5.0})
    assert [m["event"] for m in view["timeline"]] == ["call_started", "agent_answered"]
    assert view["escalations"] == [] and view["context"] == {}


LOOKED_UP: list[str] = []  # the ids the handler asked the store for


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    LOOKED_UP.clear()
    looked_up = LOOKED_UP

    def lookup(interaction_id: str) -> Mapping[str, Any] | None:
        looked_up.append(interaction_id)
        return RECORD if interaction_id == IID else None

    settings = WebSettings(
        token=TOKEN,
        records=lambda start, end: [],
        tz=UTC,
        max_concurrent_reports=load_config(env={}).http.max_concurrent_reports,
        metrics=Metrics(process=False),
        interaction=lookup,
    )
    async with TestClient(TestServer(create_web_app(settings))) as client:
        yield client


async def test_the_interaction_needs_the_bearer_token(client: TestClient[Any, Any]) -> None:
    for headers, params in (
        ({}, {}),
        ({"Authorization": "Bearer wrong"}, {}),
        ({}, {"token": TOKEN}),
    ):
        response = await client.get(f"/interactions/{IID}", headers=headers, params=params)
        assert response.status == 401
        assert "agents-queue" not in await response.text()


async def test_the_interaction_as_json(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        f"/interactions/{IID}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 200
    body = await response.json()
    assert body["interaction_id"] == IID
    assert body["escalations"][1]["result"] == "answered"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("interaction_id", ["f" * 32, "not-an-id", "0" * 33, IID.upper()])
async def test_unknown_or_malformed_ids_are_404(
    client: TestClient[Any, Any], interaction_id: str
) -> None:
    response = await client.get(
        f"/interactions/{interaction_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 404
    # a malformed id never reaches the store
    assert (["f" * 32] if interaction_id == "f" * 32 else []) == LOOKED_UP
