"""The escalation webhook end to end: real Asterisk 22, SIPp caller, bot and agent, and a real
HTTP receiver on loopback that is down while the calls escalate and comes back later.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import aiohttp
import pytest

from ari_app.store import InteractionStore
from devtools.devstack import build_stack
from devtools.runtime import Runtime
from tests.harness import until
from tests.integration.test_call_flow import (
    final_record,
    place_seed_escalation,
)
from tests.webhook_receiver import SECRET, Receiver

pytestmark = pytest.mark.integration

CALLS = 2


def outbox(store_path: str) -> list[dict[str, object]]:
    store = InteractionStore(store_path, migrate=False)
    try:
        return store.webhook_events()
    finally:
        store.close()


async def test_every_escalation_reaches_the_webhook_after_it_was_down(
    runtime: Runtime, tmp_path: Path, receiver: Receiver
) -> None:
    config_file = tmp_path / "webhooks.toml"
    config_file.write_text(
        "[webhooks]\n"
        f'urls = ["{receiver.url}"]\n'
        "backoff_initial_seconds = 0.2\n"
        "backoff_max_seconds = 1.0\n"
        "poll_interval_seconds = 0.2\n"
        # retried for as long as the test keeps the receiver down
        "max_attempts = 1000\n"
    )
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-webhooks-{uuid.uuid4().hex[:8]}",
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": str(config_file),
            "BOTBRIDGE_WEBHOOK_SECRET": SECRET.decode(),
        },
    )
    stack.start()
    try:
        # the receiver is down: the calls escalate and reach the agent all the same
        iids = []
        for _ in range(CALLS):
            call = await place_seed_escalation(stack)
            call.assert_parties_ok()
            assert call.variables["OUTCOME"] == "escalated"
            iids.append(call.interaction_id)
        for iid in iids:
            await final_record(stack, iid, "escalated")

        def mine() -> list[dict[str, object]]:
            return [r for r in outbox(stack.config.store.url) if r["interaction_id"] in iids]

        def failing() -> bool:
            rows = mine()
            return len(rows) == CALLS and all(
                r["delivered_at"] is None and int(str(r["attempts"])) >= 2 for r in rows
            )

        await until(failing, 20, "events retried while the receiver is down")

        await receiver.start()
        await until(lambda: len(receiver.posts) >= CALLS, 20, "every event at the receiver")
        await until(
            lambda: all(r["delivered_at"] for r in mine()),
            10,
            "every event marked delivered",
        )
        http = stack.config.http
        async with aiohttp.ClientSession() as client:
            reply = await client.get(f"http://{http.host}:{http.port}/metrics")
            metrics = await reply.text()
    finally:
        stack.stop()

    attempts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^botbridge_webhook_attempts_total\{result="(\w+)"\} (\S+)$', metrics, re.M
        )
    }
    assert attempts["delivered"] == CALLS and attempts["failed"] >= 2 * CALLS
    assert attempts["given_up"] == 0
    assert sorted(receiver.ids()) == sorted(f"{iid}.escalated" for iid in iids)  # once each
    assert receiver.bad_signatures == 0
    for post in receiver.posts:
        body = post["body"]
        assert body["event"] == "interaction.escalated"
        assert body["caller_number"] == "15550001111"
        assert body["queue"] == "agents-queue" and body["escalate_to"] == "agents-queue"
        assert body["context"] == {"escalate_to": "agents-queue"}
        assert body["reason"] is None
        stamps = body["timestamps"]
        assert stamps["started_at"] < stamps["transfer_at"] <= stamps["queued_at"]
        assert json.loads(post["raw"]) == body
