"""What the call handling needs from Asterisk: the ARI requests it sends, as a Protocol.

:class:`ari_app.ari.AriRest` implements it against a real Asterisk; the scenario tests drive
the same code with a recording fake typed by this Protocol (tests/fake_ari.py), so a request
the calls layer starts to use must be added here first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ari_app.ari import Bridge, Channel

__all__ = ["CallControl"]


class CallControl(Protocol):
    requests: int  # requests sent so far (the metrics' round trips per call)

    async def channels(self) -> list[Channel]: ...

    async def channel(self, channel_id: str) -> Channel: ...

    async def bridges(self) -> list[Bridge]: ...

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
    ) -> Channel: ...

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None: ...

    async def ring(self, channel_id: str) -> None: ...

    async def transfer_progress(self, channel_id: str, state: str) -> None: ...

    async def answer(self, channel_id: str) -> None: ...

    async def hangup(self, channel_id: str, reason: str | None = None) -> None: ...

    async def get_var(self, channel_id: str, name: str) -> str | None: ...

    async def get_global_var(self, name: str) -> str | None: ...

    async def set_vars(self, channel_id: str, variables: Mapping[str, str]) -> None: ...

    async def continue_in_dialplan(
        self, channel_id: str, context: str, extension: str, priority: int = 1
    ) -> None: ...

    async def create_bridge(
        self, bridge_type: str = "mixing", bridge_id: str | None = None, name: str | None = None
    ) -> Bridge: ...

    async def add_to_bridge(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None: ...

    async def destroy_bridge(self, bridge_id: str) -> None: ...

    async def start_bridge_moh(self, bridge_id: str, moh_class: str) -> None: ...

    async def stop_bridge_moh(self, bridge_id: str) -> None: ...

    async def subscribe(self, app: str, event_sources: str | Sequence[str]) -> None: ...

    async def set_event_filter(self, app: str, allowed_types: Sequence[str]) -> None: ...

    async def endpoint_states(self, technology: str) -> dict[str, str]: ...
