"""BridgeApp driven by ARI event scripts, in the spirit of Asterisk's testsuite.

Each tests/scenarios/ari/<name>.json is data: the channels of the call, the ARI events in
(written as shorthand, expanded here to the JSON Asterisk 22 sends and loaded through the
real schemas), after each event the exact set of REST requests the app must send (method and
the arguments that matter; requests of one step may run concurrently, so order within a step
is free, but no request may be missing or extra), and the record it must leave. ``{iid}``
stands for the interaction id the app chose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ari_app.ari import parse_event
from ari_app.calls.app import BridgeApp
from ari_app.config import load_config
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, Request, channel_json
from tests.records import NODE

SCRIPTS = sorted((Path(__file__).parent.parent / "scenarios" / "ari").glob("*.json"))
APP = "botbridge"
TIMESTAMP = "2026-12-01T10:00:00.000+0000"


@pytest.mark.parametrize("script_path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
async def test_scenario(script_path: Path, store: InteractionStore) -> None:
    script = json.loads(script_path.read_text())
    config = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STORE_NODE": NODE},
        overrides=script.get("config"),
    )
    ari = FakeAri(variables=script.get("variables", {}))
    app = BridgeApp(config, ari, store)
    iid = ""
    for number, step in enumerate(script["steps"], 1):
        before = len(ari.calls)
        # "gone": channels that no longer exist in Asterisk when this event is handled
        ari.gone.update(fill(script["channels"][name]["id"], iid) for name in step.get("gone", ()))
        event = parse_event(event_json(script, step, iid))
        assert event is not None, step
        await app.handle(event)
        if not iid:
            iid = next(s.interaction_id for s in app.sessions.values())
        made = ari.calls[before:]
        expected = [(m, fill(args, iid)) for m, args in step["requests"]]
        assert_requests(made, expected, f"{script_path.stem} step {number} ({step['event']})")

    await app.records.flush()
    row = store.get(iid)
    assert row is not None
    for name, value in fill(script["record"], iid).items():
        assert row[name] == value, (name, row)
    for name in script.get("record_set", []):
        assert row[name] is not None, (name, row)
    assert bool(app.sessions) is script["followed"]


def assert_requests(made: list[Request], expected: list[Request], where: str) -> None:
    remaining = list(made)
    for method, args in expected:
        match = next(
            (r for r in remaining if r[0] == method and contains(r[1], args)),
            None,
        )
        assert match is not None, f"{where}: no {method} {args} among {remaining}"
        remaining.remove(match)
    assert not remaining, f"{where}: unexpected requests {remaining}"


def contains(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Every expected argument is there with its value; a dict value only needs the keys
    the script names (e.g. some of the channel variables set)."""
    for key, value in expected.items():
        got = actual.get(key)
        if isinstance(value, dict):
            if not isinstance(got, dict) or not contains(got, value):
                return False
        elif got != value:
            return False
    return True


def fill(value: Any, iid: str) -> Any:
    if isinstance(value, str):
        return value.replace("{iid}", iid)
    if isinstance(value, list):
        return [fill(v, iid) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, iid) for k, v in value.items()}
    return value


def event_json(script: dict[str, Any], step: dict[str, Any], iid: str) -> dict[str, Any]:
    """The event as Asterisk sends it, from the script's shorthand."""
    channels = script["channels"]

    def channel(role: str) -> dict[str, Any]:
        spec = fill(channels[role], iid)
        return channel_json(
            spec["id"],
            name=spec["name"],
            number=spec.get("number", ""),
            context="botbridge-inbound",
            exten=spec.get("exten", "s"),
            priority=2,
            app_data="",
            creationtime=TIMESTAMP,
        )

    event: dict[str, Any] = {"type": step["event"], "application": APP, "timestamp": TIMESTAMP}
    if "channel" in step:
        event["channel"] = channel(step["channel"])
    if "args" in step:
        event["args"] = fill(step["args"], iid)
    if "replace_channel" in step:
        event["replace_channel"] = channel(step["replace_channel"])
    if "cause" in step:
        event["cause"] = step["cause"]
        event["cause_txt"] = ""
    if step["event"] == "Dial":
        event["peer"] = channel(step["peer"])
        event["dialstatus"] = step["dialstatus"]
        if "caller" in step:
            event["caller"] = channel(step["caller"])
    return event
