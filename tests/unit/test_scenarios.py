"""BridgeApp driven by ARI event scripts, in the spirit of Asterisk's testsuite.

Each tests/scenarios/ari/<name>.json (and record_lifecycle/<name>.json) is data:

- what is there before the app starts: ``channels`` (by role), the ones still ``live`` in
  Asterisk, ``bridges``, channel ``variables``, ``records`` an earlier run left open, a
  ``session`` the app already follows, whether the app is ``draining``;
- ``steps``: an ARI ``event`` (written as shorthand, expanded here to the JSON Asterisk 22
  sends and loaded through the real schemas), an ``app`` method (``reconcile``...) or a
  ``session`` method of the followed session;
- after each step, what must hold: ``requests`` (the exact set of REST requests the step
  sent: method and the arguments that matter; requests of one step may run concurrently, so
  order within a step is free, but no request may be missing or extra), or
  ``requests_by_method`` (the exact set for the methods named, other methods free),
  ``in_order`` (requests that must come in this order), ``records`` (fields of stored
  records, by interaction id), ``record_count``, ``sessions`` (the callers followed);
- at the end, the ``record`` the call leaves, the fields ``record_set`` and ``followed``.

``{iid}`` stands for the interaction id the app chose (or the given session's). A record
field is a value or a matcher: ``{"$approx": 61, "$abs": 1}``, ``{"$ago": 0, "$abs": 1}``
(seconds before now), ``{"$same_as": "field"}`` (with ``$abs``: within that),
``{"$not_before": "field"}``, ``{"$set": true}``, ``{"$unchanged": true}`` (as at the last
check). In given records and sessions, ``{"$ago": 30}`` is a time 30 s ago. A request
argument ending in ``*`` matches any value with that prefix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from ari_app.ari import parse_event
from ari_app.calls.app import BridgeApp
from ari_app.calls.services import CallServices
from ari_app.calls.session import CallSession
from ari_app.calls.states import CallState
from ari_app.config import Config, load_config
from ari_app.records import RecordChange
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri, Request, bridge, channel, channel_json
from tests.records import NODE, WriteThrough, create, stored

SCENARIOS = Path(__file__).parent.parent / "scenarios" / "ari"
SCRIPTS = sorted(SCENARIOS.rglob("*.json"))
APP = "botbridge"
TIMESTAMP = "2026-12-01T10:00:00.000+0000"
MATCHERS = {"$approx", "$ago", "$same_as", "$not_before", "$set", "$unchanged"}


@pytest.mark.parametrize(
    "script_path", SCRIPTS, ids=[str(p.relative_to(SCENARIOS).with_suffix("")) for p in SCRIPTS]
)
async def test_scenario(script_path: Path, store: InteractionStore) -> None:
    script = json.loads(script_path.read_text())
    name = script_path.stem
    config = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STORE_NODE": NODE},
        overrides=script.get("config"),
    )
    channels = script.get("channels", {})
    ari = FakeAri(
        [channel(**channel_fields(channels[role])) for role in script.get("live", ())],
        [bridge(b["id"], *b["channels"]) for b in script.get("bridges", ())],
        variables=script.get("variables", {}),
    )
    given = {fields["interaction_id"] for fields in script.get("records", ())}
    for fields in script.get("records", ()):  # records an earlier run left open
        values = {k: given_value(v) for k, v in fields.items() if k != "interaction_id"}
        create(store, fields["interaction_id"], **cast(RecordChange, values))
    app = BridgeApp(config, ari, store)
    app.draining = script.get("draining", False)
    session = None
    if "session" in script:
        session = given_session(script["session"], config, store, ari, channels)
        app.adopt(session)
    iid = session.interaction_id if session else ""
    seen: dict[str, dict[str, Any]] = {}  # the records as at the last check
    for number, step in enumerate(script["steps"], 1):
        what = step.get("event") or step.get("app") or step.get("session")
        where = f"{name} step {number} ({what})"
        before = len(ari.calls)
        # "gone": channels that no longer exist in Asterisk when this step runs
        ari.gone.update(fill(channels[role]["id"], iid) for role in step.get("gone", ()))
        await run_step(app, session, script, step, iid)
        await app.records.flush()
        if not iid:
            iid = chosen_id(app, store, given)
        made = ari.calls[before:]
        if "requests" in step:
            expected = [(m, fill(args, iid)) for m, args in step["requests"]]
            assert_requests(made, expected, where)
        for method, calls in step.get("requests_by_method", {}).items():
            mine = [r for r in made if r[0] == method]
            assert_requests(mine, [(method, fill(args, iid)) for args in calls], where)
        if "in_order" in step:
            assert_in_order(made, [(m, fill(args, iid)) for m, args in step["in_order"]], where)
        for record_id, fields in fill(step.get("records", {}), iid).items():
            record = dict(stored(store, record_id))
            check_record(record, fields, seen.get(record_id, {}), where)
            seen[record_id] = record
        if "record_count" in step:
            assert len(store.all()) == step["record_count"], (where, store.all())
        if "sessions" in step:
            assert set(app.sessions) == set(step["sessions"]), (where, app.sessions)
            if not step["sessions"]:
                assert app._by_channel == {}, where

    if "record" in script:
        row: dict[str, Any] = dict(stored(store, iid))
        for field, value in fill(script["record"], iid).items():
            assert row[field] == value, (field, row)
        for field in script.get("record_set", []):
            assert row[field] is not None, (field, row)
    if "followed" in script:
        assert bool(app.sessions) is script["followed"]


async def run_step(
    app: BridgeApp,
    session: CallSession | None,
    script: dict[str, Any],
    step: dict[str, Any],
    iid: str,
) -> None:
    if "event" in step:
        event = parse_event(event_json(script, step, iid))
        assert event is not None, step
        await app.handle(event)
    elif "app" in step:
        await getattr(app, step["app"])(*step.get("args", ()))
    else:
        assert session is not None, f"{step['session']}: the script gives no session"
        args = list(step.get("args", ()))
        if "bridge" in step:
            args.append(bridge(step["bridge"]["id"], *step["bridge"]["channels"]))
        await getattr(session, step["session"])(*fill(args, iid))
    await app.dispatcher.idle()


def given_session(
    spec: Mapping[str, Any],
    config: Config,
    store: InteractionStore,
    ari: FakeAri,
    channels: Mapping[str, Any],
) -> CallSession:
    """The call the app follows when the script starts, in ``spec["state"]``, with its
    record (its changes committed at once, through the writer's path)."""
    caller = channel(**channel_fields(channels[spec["caller"]]))
    state = CallState(spec["state"])
    session = CallSession(
        CallServices(ari=ari, config=config, records=WriteThrough(store)),
        config.profiles["default"],
        caller,
        interaction_id=spec["interaction_id"],
        state=state,
        bot_channel_id=spec.get("bot_channel_id"),
        bot_answered_at=given_value(spec.get("bot_answered_at")),
    )
    create(
        store,
        spec["interaction_id"],
        profile="default",
        caller_channel=caller.id,
        state=state.value,
    )
    return session


def chosen_id(app: BridgeApp, store: InteractionStore, given: set[str]) -> str:
    """The interaction id the app chose: its first call's, or that of the one record it
    wrote (a caller sent on without a session); "" while there is none."""
    if app.sessions:
        return next(s.interaction_id for s in app.sessions.values())
    new = [r["interaction_id"] for r in store.all() if r["interaction_id"] not in given]
    return new[0] if len(new) == 1 else ""


def given_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$ago"}:
        return time.time() - value["$ago"]
    return value


def check_record(
    row: Mapping[str, Any], fields: Mapping[str, Any], seen: Mapping[str, Any], where: str
) -> None:
    for field, expected in fields.items():
        got = row[field]
        if not (isinstance(expected, dict) and set(expected) & MATCHERS):
            assert got == expected, (where, field, row)
            continue
        tolerance = expected.get("$abs", 0)
        if "$set" in expected:
            ok = (got is not None) is expected["$set"]
        elif got is None:
            ok = False
        elif "$approx" in expected:
            ok = abs(got - expected["$approx"]) <= tolerance
        elif "$ago" in expected:
            ok = abs(time.time() - expected["$ago"] - got) <= tolerance
        elif "$same_as" in expected:
            other = row[expected["$same_as"]]
            ok = other is not None and abs(got - other) <= tolerance
        elif "$not_before" in expected:
            other = row[expected["$not_before"]]
            ok = other is not None and got >= other
        else:  # $unchanged
            ok = field in seen and got == seen[field]
        assert ok, (where, field, expected, row)


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


def assert_in_order(made: list[Request], expected: list[Request], where: str) -> None:
    """Each expected request is made, after the one before it."""
    position = 0
    for method, args in expected:
        found = next(
            (
                n
                for n in range(position, len(made))
                if made[n][0] == method and contains(made[n][1], args)
            ),
            None,
        )
        assert found is not None, f"{where}: no {method} {args} in order among {made}"
        position = found + 1


def contains(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Every expected argument is there with its value; a dict value only needs the keys
    the script names (e.g. some of the channel variables set); a value ending in ``*`` is
    a prefix."""
    for key, value in expected.items():
        got = actual.get(key)
        if isinstance(value, dict):
            if not isinstance(got, dict) or not contains(got, value):
                return False
        elif isinstance(value, str) and value.endswith("*"):
            if not isinstance(got, str) or not got.startswith(value[:-1]):
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
        return {fill(k, iid): fill(v, iid) for k, v in value.items()}
    return value


def channel_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A script's channel (id, name, and where it is in the dialplan) as channel_json's
    arguments."""
    return {
        "cid": spec["id"],
        "name": spec["name"],
        "number": spec.get("number", ""),
        "context": spec.get("context", "botbridge-inbound"),
        "exten": spec.get("exten", "s"),
        "priority": 2,
        "app_name": spec.get("app_name", "Stasis"),
        "app_data": spec.get("app_data", ""),
        "creationtime": TIMESTAMP,
    }


def event_json(script: dict[str, Any], step: dict[str, Any], iid: str) -> dict[str, Any]:
    """The event as Asterisk sends it, from the script's shorthand."""
    channels = script["channels"]

    def channel_of(role: str) -> dict[str, Any]:
        return channel_json(**channel_fields(fill(channels[role], iid)))

    event: dict[str, Any] = {"type": step["event"], "application": APP, "timestamp": TIMESTAMP}
    if "channel" in step:
        event["channel"] = channel_of(step["channel"])
    if "args" in step:
        event["args"] = fill(step["args"], iid)
    if "replace_channel" in step:
        event["replace_channel"] = channel_of(step["replace_channel"])
    if "cause" in step:
        event["cause"] = step["cause"]
        event["cause_txt"] = ""
    if step["event"] == "Dial":
        event["peer"] = channel_of(step["peer"])
        event["dialstatus"] = step["dialstatus"]
        if "caller" in step:
            event["caller"] = channel_of(step["caller"])
    return event
