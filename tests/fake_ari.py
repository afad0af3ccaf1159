"""A recording stand-in for Asterisk's ARI, typed by the calls layer's CallControl Protocol.

Only for pure logic tests (the scenario scripts in tests/scenarios/ari/, the record
lifecycle): every request is recorded as ``(method, {argument: value})`` and answered from
what the test set up (live channels and bridges, variable values). The call flows themselves
are tested against a real Asterisk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ari_app.ari import AriBadRequest, AriNotFound, Bridge, Channel, load_channel
from ari_app.calls.control import CallControl

Request = tuple[str, dict[str, Any]]


TIMESTAMP = "2026-12-01T10:00:00.000+0000"


def channel_json(
    cid: str,
    *,
    name: str = "PJSIP/carrier-1",
    state: str = "Up",
    number: str = "15550001111",
    caller_name: str = "",
    context: str = "botbridge-queue",
    exten: str = "s",
    priority: int = 1,
    app_name: str | None = "Stasis",
    app_data: str | None = None,
    protocol_id: str = "",
    creationtime: str = TIMESTAMP,
    **extra: Any,
) -> dict[str, Any]:
    """A channel as Asterisk 22's ARI sends it (events and REST replies): the one way the
    tests build a channel (``channel`` loads it through the real schema)."""
    return {
        "id": cid,
        "name": name,
        "state": state,
        "protocol_id": protocol_id,
        "caller": {"name": caller_name, "number": number},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {
            "context": context,
            "exten": exten,
            "priority": priority,
            "app_name": app_name,
            "app_data": app_data,
        },
        "creationtime": creationtime,
        "language": "en",
        **extra,
    }


def channel(cid: str, **fields: Any) -> Channel:
    """The ``Channel`` of ``channel_json(cid, **fields)``."""
    return load_channel(channel_json(cid, **fields))


def bridge(bid: str, *channels: str) -> Bridge:
    return Bridge(bid, "simple_bridge", "mixing", "user", "Queue", "", tuple(channels))


class FakeAri:
    def __init__(
        self,
        channels: Sequence[Channel] = (),
        bridges: Sequence[Bridge] = (),
        variables: Mapping[str, str] | None = None,
    ) -> None:
        self.live = {c.id: c for c in channels}
        self.live_bridges = list(bridges)
        self.variables = dict(variables or {})  # variable or function name -> value
        self.calls: list[Request] = []
        self.requests = 0
        self.gone: set[str] = set()  # channel ids whose requests answer 404
        self.endpoint_state: dict[str, str] = {}  # endpoint_states(): resource -> state

    def _record(self, method: str, **args: Any) -> None:
        self.requests += 1
        self.calls.append((method, args))
        channel_id = args.get("channel_id")
        if channel_id in self.gone:
            raise AriNotFound(404, "POST", f"/channels/{channel_id}", "Channel not found")

    def called(self, method: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == method]

    async def channels(self) -> list[Channel]:
        self._record("channels")
        return list(self.live.values())

    async def channel(self, channel_id: str) -> Channel:
        self._record("channel", channel_id=channel_id)  # 404 for a gone channel
        return self.live.get(channel_id) or channel(channel_id)

    async def bridges(self) -> list[Bridge]:
        self._record("bridges")
        return list(self.live_bridges)

    async def create_channel(
        self,
        endpoint: str,
        app: str,
        *,
        app_args: str | None = None,
        channel_id: str | None = None,
        originator: str | None = None,
        variables: Mapping[str, str] | None = None,
        other_channel_id: str | None = None,
    ) -> Channel:
        self._record(
            "create_channel",
            endpoint=endpoint,
            app=app,
            app_args=app_args,
            new_channel_id=channel_id,
            originator=originator,
            variables=dict(variables or {}),
        )
        return channel(channel_id or "new", name=endpoint)

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None:
        self._record("dial", channel_id=channel_id, caller=caller, timeout=timeout)

    async def ring(self, channel_id: str) -> None:
        self._record("ring", channel_id=channel_id)

    async def transfer_progress(self, channel_id: str, state: str) -> None:
        self._record("transfer_progress", channel_id=channel_id, state=state)

    async def answer(self, channel_id: str) -> None:
        self._record("answer", channel_id=channel_id)

    async def hangup(self, channel_id: str, reason: str | None = None) -> None:
        self.requests += 1
        # a gone channel is fine; the reason is kept only when one is given
        self.calls.append(
            ("hangup", {"channel_id": channel_id, **({"reason": reason} if reason else {})})
        )

    async def get_var(self, channel_id: str, name: str) -> str | None:
        self._record("get_var", channel_id=channel_id, name=name)
        return self.variables.get(name)

    async def get_global_var(self, name: str) -> str | None:
        self._record("get_global_var", name=name)
        return self.variables.get(name)

    async def set_vars(self, channel_id: str, variables: Mapping[str, str]) -> None:
        self._record("set_vars", channel_id=channel_id, variables=dict(variables))

    async def continue_in_dialplan(
        self, channel_id: str, context: str, extension: str, priority: int = 1
    ) -> None:
        self._record(
            "continue_in_dialplan", channel_id=channel_id, context=context, extension=extension
        )

    async def create_bridge(
        self, bridge_type: str = "mixing", bridge_id: str | None = None, name: str | None = None
    ) -> Bridge:
        self._record("create_bridge", bridge_type=bridge_type, bridge_id=bridge_id)
        return bridge(bridge_id or "new")

    async def add_to_bridge(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None:
        ids = [channel_ids] if isinstance(channel_ids, str) else list(channel_ids)
        self._record("add_to_bridge", bridge_id=bridge_id, channels=ids)
        if self.gone & set(ids):  # what Asterisk answers for a channel that no longer exists
            raise AriBadRequest(
                400, "POST", f"/bridges/{bridge_id}/addChannel", "Channel not found"
            )

    async def start_bridge_moh(self, bridge_id: str, moh_class: str) -> None:
        self._record("start_bridge_moh", bridge_id=bridge_id, moh_class=moh_class)

    async def stop_bridge_moh(self, bridge_id: str) -> None:
        self._record("stop_bridge_moh", bridge_id=bridge_id)

    async def destroy_bridge(self, bridge_id: str) -> None:
        self._record("destroy_bridge", bridge_id=bridge_id)

    async def subscribe(self, app: str, event_sources: str | Sequence[str]) -> None:
        sources = [event_sources] if isinstance(event_sources, str) else list(event_sources)
        self._record("subscribe", app=app, sources=sources)

    async def set_event_filter(self, app: str, allowed_types: Sequence[str]) -> None:
        self._record("set_event_filter", app=app, types=list(allowed_types))

    async def endpoint_states(self, technology: str) -> dict[str, str]:
        self._record("endpoint_states", technology=technology)
        return dict(self.endpoint_state)


def _typed(ari: FakeAri) -> CallControl:
    return ari  # mypy checks here that the fake keeps up with the Protocol
