"""`[logging] format = "json"` in a running app: a real call's log lines carry its
interaction id (the one the bot received in X-Interaction-Id) and state as fields."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from tests.integration.test_call_flow import (
    final_record,
    place_seed_escalation,
)

pytestmark = pytest.mark.integration
# calls/session.py logs each move as "call <id>: <from> -(<trigger>)-> <to>"
TRANSITION = re.compile(r"(\w+) -\(\w+\)-> (\w+)")


@pytest.fixture(scope="module")
def json_stack(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    root = runtime.scratch_root() / f"test-json-logs-{tmp_path_factory.getbasetemp().name}"
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={"BOTBRIDGE_LOG_FORMAT": "json", "BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4"},
    )
    stack.start()
    yield stack
    stack.stop()


async def test_a_calls_log_lines_carry_its_id_and_state(json_stack: DevStack) -> None:
    offset = len(json_stack.app_log_text())
    call = await place_seed_escalation(json_stack)
    call.assert_parties_ok()
    iid = call.interaction_id
    await final_record(json_stack, iid, "escalated")

    lines = [line for line in json_stack.app_log_text()[offset:].splitlines() if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # all JSON
    assert records
    assert {r["node"] for r in records} == {json_stack.config.store.node}
    mine = [r for r in records if r.get("interaction_id") == iid]
    assert mine, "\n".join(lines)
    # the transition lines of this call (written just after the move): the state they name
    # as the target is the state field
    moves = [
        (match.group(1), match.group(2), r["call_state"])
        for r in mine
        if (match := TRANSITION.fullmatch(r["message"].split(": ", 1)[1]))
    ]
    assert [(source, target) for source, target, _ in moves][:3] == [
        ("started", "bot_dialling"),
        ("bot_dialling", "bot_connected"),
        ("bot_connected", "transferring"),
    ], moves
    assert all(target == state for _, target, state in moves), moves
    # no line about this call went out without its fields
    about_it = [r for r in records if f"call {iid}" in r["message"]]
    assert all(r.get("interaction_id") == iid for r in about_it), about_it
