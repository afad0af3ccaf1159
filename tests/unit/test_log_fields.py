"""Log records emitted while a call's events are handled carry that call's id and state."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from dataclasses import dataclass

from pythonjsonlogger.json import JsonFormatter

from ari_app import cli
from ari_app.calls.dispatch import Dispatcher
from ari_app.calls.logcontext import CallFields, bind_call
from ari_app.calls.states import CallState

log = logging.getLogger("test.calls")


@dataclass
class Call:
    interaction_id: str
    state: CallState = CallState.STARTED


async def test_each_call_task_logs_its_own_fields() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(CallFields("node-a"))
    handler.setFormatter(JsonFormatter(cli.JSON_LOG_FIELDS, timestamp=True))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    calls = {"call-1": Call("call-1"), "call-2": Call("call-2")}

    async def handle(key: str, event: CallState) -> None:
        call = calls[key]
        bind_call(call)
        log.info("before %s", event.value)
        await asyncio.sleep(0)  # the other call runs here
        call.state = event
        log.info("after %s", event.value)

    dispatcher: Dispatcher[CallState] = Dispatcher(handle)
    try:
        dispatcher.post("call-1", CallState.BOT_DIALLING)
        dispatcher.post("call-2", CallState.BOT_DIALLING)
        dispatcher.post("call-1", CallState.BOT_CONNECTED)
        await dispatcher.idle()
        log.info("outside any call")
    finally:
        log.removeHandler(handler)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    seen = [(r["message"], r.get("interaction_id"), r.get("call_state")) for r in records]
    assert sorted(seen[:-1]) == sorted(
        [
            ("before bot_dialling", "call-1", "started"),
            ("after bot_dialling", "call-1", "bot_dialling"),
            ("before bot_connected", "call-1", "bot_dialling"),
            ("after bot_connected", "call-1", "bot_connected"),
            ("before bot_dialling", "call-2", "started"),
            ("after bot_dialling", "call-2", "bot_dialling"),
        ]
    )
    assert seen[-1] == ("outside any call", None, None)
    assert {r["node"] for r in records} == {"node-a"}
