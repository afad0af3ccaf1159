"""Asyncio client for the ARI REST API (aiohttp).

``request`` is the general entry point; the named helpers below it cover what the call flow
uses and return validated objects from :mod:`ari_app.ari.schemas`.
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import ssl as ssllib
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from yarl import URL

from .errors import AriConnectionError, AriError, AriNotFound, AriServerError, error_for_status
from .schemas import Bridge, Channel, load_bridge, load_bridges, load_channel, load_channels

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "AriRest", "ParamValue", "encode_params", "path_for"]

logger = logging.getLogger(__name__)

# Seconds for a whole request. ARI calls are local and quick; anything slower means Asterisk is
# wedged, and the call flow is better off failing the call than holding it.
DEFAULT_REQUEST_TIMEOUT = 10.0
# Concurrent kept-alive HTTP connections to ARI; each Asterisk HTTP session is a thread,
# bounded by http.conf sessionlimit. At most 10: Asterisk listens with a backlog of 10, and
# connections opened together beyond it have their SYNs dropped (1-3 s stalls).
DEFAULT_CONNECTIONS = 8
# An idle pooled connection is closed after this long: before Asterisk does (the shipped
# http.conf session_keep_alive is 60 s), to never send on a socket it is closing, and long
# enough that the pool is not reopened after every lull.
KEEPALIVE_SECONDS = 50.0
# Cap on how much of a non-JSON error body ends up in an exception message.
MAX_ERROR_BODY_CHARS = 200
_NO_CONTENT = 204

ParamValue = str | int | bool | None


class AriRest:
    """ARI REST client; ``base_url`` is like ``http://127.0.0.1:8088/ari``.

    One aiohttp session with a pool of ``connections`` kept-alive connections is opened
    lazily and reused, so independent requests of many calls run concurrently; call
    :meth:`close` (or use ``async with``) when done. ``requests`` counts requests sent.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        ssl: ssllib.SSLContext | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.requests = 0
        self._connections = connections
        self._headers = {"Authorization": basic_authorization(username, password)}
        self._ssl: ssllib.SSLContext | bool = ssl if ssl is not None else True
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ----------------------------------------------------------------------- generic requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, or None for an empty reply.

        ``path`` is relative to the base URL and must already be percent-encoded (build it
        with :func:`path_for`). Raises an :class:`AriError` subclass on an HTTP error status
        and :class:`AriConnectionError` when no response arrives.
        """
        method = method.upper()
        path = "/" + path.lstrip("/")
        url = URL(self.base_url + path, encoded=True)
        started = time.monotonic()
        self.requests += 1
        try:
            async with self._get_session().request(
                method,
                url,
                params=encode_params(params),
                json=json,
                ssl=self._ssl,
            ) as response:
                status = response.status
                reason = response.reason
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AriConnectionError(method, path, _describe_transport_error(exc)) from exc
        logger.debug(
            "ARI %s %s -> %d in %.0f ms", method, path, status, (time.monotonic() - started) * 1e3
        )
        if status >= 400:
            raise error_for_status(status, method, path, _error_message(body, reason))
        if status == _NO_CONTENT or not body.strip():
            return None
        try:
            return jsonlib.loads(body)
        except ValueError as exc:
            raise AriError(
                status, method, path, f"response is not JSON: {_truncate(body)}"
            ) from exc

    async def get(self, path: str, *, params: Mapping[str, ParamValue] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(
        self, path: str, *, params: Mapping[str, ParamValue] | None = None, json: Any = None
    ) -> Any:
        return await self.request("POST", path, params=params, json=json)

    async def put(
        self, path: str, *, params: Mapping[str, ParamValue] | None = None, json: Any = None
    ) -> Any:
        return await self.request("PUT", path, params=params, json=json)

    async def delete(self, path: str, *, params: Mapping[str, ParamValue] | None = None) -> Any:
        return await self.request("DELETE", path, params=params)

    # ----------------------------------------------------------------------- channels

    async def channels(self) -> list[Channel]:
        return load_channels(await self.get("/channels"))

    async def channel(self, channel_id: str) -> Channel:
        return load_channel(await self.get(path_for("channels", channel_id)))

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
        """Create (but do not dial) a channel in Stasis app ``app`` (``other_channel_id``:
        the id of a Local channel's second half)."""
        body = {"variables": dict(variables)} if variables else None
        params: dict[str, ParamValue] = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
        }
        return load_channel(await self.post("/channels/create", params=params, json=body))

    async def answer(self, channel_id: str) -> None:
        await self.post(path_for("channels", channel_id, "answer"))

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None:
        """Dial a channel made with :meth:`create_channel`; ``timeout`` seconds to answer.
        With ``caller`` (a channel id) Asterisk does what Dial() does: the dialled channel's
        connected line (the From of its INVITE) is the caller's id."""
        params: dict[str, ParamValue] = {"caller": caller, "timeout": timeout}
        await self.post(path_for("channels", channel_id, "dial"), params=params)

    async def ring(self, channel_id: str) -> None:
        await self.post(path_for("channels", channel_id, "ring"))

    async def transfer_progress(self, channel_id: str, state: str) -> None:
        """Tell the bot how its REFER went (``PJSIP_TRANSFER_HANDLING()=ari-only`` on the
        channel): ``channel_answered`` is NOTIFY 200, ``channel_declined`` NOTIFY 603."""
        await self.post(
            path_for("channels", channel_id, "transfer_progress"), params={"states": state}
        )

    async def hangup(self, channel_id: str, reason: str | None = None) -> None:
        """Hang up; a channel that is already gone counts as success."""
        try:
            await self.delete(path_for("channels", channel_id), params={"reason": reason})
        except AriNotFound:
            logger.debug("hangup of channel %s: already gone", channel_id)

    async def get_var(self, channel_id: str, name: str) -> str | None:
        """Read a channel variable or function; None if unset or the channel is gone.

        Asterisk answers 500 rather than 404 when a dialplan function such as
        ``PJSIP_HEADER(read,X-Foo)`` has nothing to return, so 500 also means "unset" here.
        """
        try:
            reply = await self.get(
                path_for("channels", channel_id, "variable"), params={"variable": name}
            )
        except (AriNotFound, AriServerError) as exc:
            logger.debug("variable %s on channel %s not readable: %s", name, channel_id, exc)
            return None
        value = reply.get("value") if isinstance(reply, Mapping) else None
        return value if isinstance(value, str) else None

    async def set_var(self, channel_id: str, name: str, value: str) -> None:
        await self.post(
            path_for("channels", channel_id, "variable"),
            params={"variable": name, "value": value},
        )

    async def get_global_var(self, name: str) -> str | None:
        """Read a global variable or a channel-less function (``DB(...)``, ``DB_KEYS(...)``);
        None if unset."""
        try:
            reply = await self.get("/asterisk/variable", params={"variable": name})
        except (AriNotFound, AriServerError) as exc:
            logger.debug("global variable %s not readable: %s", name, exc)
            return None
        value = reply.get("value") if isinstance(reply, Mapping) else None
        return value if isinstance(value, str) else None

    async def set_vars(self, channel_id: str, variables: Mapping[str, str]) -> None:
        """Set several variables in one request, with Asterisk's ``ARRAY()`` function.

        Values must not contain ``,``, ``"`` or ``\\`` (ARRAY splits its value like
        application arguments); the call flow only passes values reduced to a safe alphabet.
        """
        if not variables:
            return
        if len(variables) == 1:  # any value: no ARRAY() involved
            ((name, value),) = variables.items()
            await self.set_var(channel_id, name, value)
            return
        bad = [name for name, value in variables.items() if set(value) & _ARRAY_UNSAFE]
        if bad:
            raise ValueError(f"values of {bad} cannot travel through ARRAY()")
        await self.set_var(
            channel_id, f"ARRAY({','.join(variables)})", ",".join(variables.values())
        )

    async def continue_in_dialplan(
        self, channel_id: str, context: str, extension: str, priority: int = 1
    ) -> None:
        """Leave Stasis and resume the dialplan at context/extension/priority."""
        params: dict[str, ParamValue] = {
            "context": context,
            "extension": extension,
            "priority": priority,
        }
        await self.post(path_for("channels", channel_id, "continue"), params=params)

    # ----------------------------------------------------------------------- bridges

    async def bridges(self) -> list[Bridge]:
        return load_bridges(await self.get("/bridges"))

    async def bridge(self, bridge_id: str) -> Bridge:
        return load_bridge(await self.get(path_for("bridges", bridge_id)))

    async def create_bridge(
        self,
        bridge_type: str = "mixing",
        bridge_id: str | None = None,
        name: str | None = None,
    ) -> Bridge:
        """Create a bridge; ``bridge_type`` is a comma list such as ``mixing,proxy_media``."""
        params: dict[str, ParamValue] = {"type": bridge_type, "bridgeId": bridge_id, "name": name}
        return load_bridge(await self.post("/bridges", params=params))

    async def add_to_bridge(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None:
        params: dict[str, ParamValue] = {"channel": _comma_list(channel_ids)}
        await self.post(path_for("bridges", bridge_id, "addChannel"), params=params)

    async def remove_from_bridge(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None:
        params: dict[str, ParamValue] = {"channel": _comma_list(channel_ids)}
        await self.post(path_for("bridges", bridge_id, "removeChannel"), params=params)

    async def start_bridge_moh(self, bridge_id: str, moh_class: str) -> None:
        """Music on hold to everyone in the bridge (an announcer channel Asterisk adds)."""
        params: dict[str, ParamValue] = {"mohClass": moh_class}
        await self.post(path_for("bridges", bridge_id, "moh"), params=params)

    async def stop_bridge_moh(self, bridge_id: str) -> None:
        await self.delete(path_for("bridges", bridge_id, "moh"))

    async def destroy_bridge(self, bridge_id: str) -> None:
        """Destroy a bridge; one that is already gone counts as success."""
        try:
            await self.delete(path_for("bridges", bridge_id))
        except AriNotFound:
            logger.debug("destroy of bridge %s: already gone", bridge_id)

    # ----------------------------------------------------------------------- system

    async def applications(self) -> list[dict[str, Any]]:
        reply = await self.get("/applications")
        return list(reply) if isinstance(reply, list) else []

    async def subscribe(self, app: str, event_sources: str | Sequence[str]) -> None:
        """Subscribe ``app`` to event sources (``channel:<id>``, ``bridge:<id>``...): their
        events keep coming after a channel leaves Stasis."""
        params: dict[str, ParamValue] = {"eventSource": _comma_list(event_sources)}
        await self.post(path_for("applications", app, "subscription"), params=params)

    async def endpoint_states(self, technology: str) -> dict[str, str]:
        """Every endpoint of ``technology``: resource -> state (online, offline, unknown)."""
        reply = await self.get(path_for("endpoints", technology))
        if not isinstance(reply, list):
            return {}
        return {
            str(e["resource"]): str(e.get("state") or "unknown")
            for e in reply
            if isinstance(e, Mapping) and "resource" in e
        }

    async def set_event_filter(self, app: str, allowed_types: Sequence[str]) -> None:
        """Ask Asterisk to send ``app`` only these event types (the rest are never
        serialised or written to the socket)."""
        body = {"allowed": [{"type": t} for t in sorted(allowed_types)]}
        await self.put(path_for("applications", app, "eventFilter"), json=body)

    async def asterisk_info(self) -> dict[str, Any]:
        reply = await self.get("/asterisk/info")
        return dict(reply) if isinstance(reply, Mapping) else {}

    # ----------------------------------------------------------------------- internals

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use rather than in __init__: aiohttp sessions must be made inside
        # a running event loop, and the client is often constructed before the loop starts.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections, keepalive_timeout=KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, connector=connector
            )
        return self._session


_ARRAY_UNSAFE = frozenset(',"\\')


def basic_authorization(username: str, password: str) -> str:
    """HTTP Basic credentials for ARI (REST and the event WebSocket)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def path_for(*segments: str) -> str:
    """Join path segments, percent-encoding each so ids cannot inject ``/``, ``?`` or ``#``."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def encode_params(params: Mapping[str, ParamValue] | None) -> dict[str, str]:
    """Query parameters as ARI expects them: None dropped, booleans as ``true``/``false``."""
    if not params:
        return {}
    encoded: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        # bool before int: bool is a subclass of int and str(True) would be "True".
        if isinstance(value, bool):
            encoded[key] = "true" if value else "false"
        else:
            encoded[key] = str(value)
    return encoded


def _comma_list(values: str | Sequence[str]) -> str:
    return values if isinstance(values, str) else ",".join(values)


def _error_message(body: bytes, reason: str | None) -> str | None:
    """Asterisk's ``{"message": ...}`` when present, else the body text or HTTP reason."""
    try:
        decoded = jsonlib.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping) and isinstance(decoded.get("message"), str):
        return str(decoded["message"])
    text = _truncate(body)
    return text or reason


def _truncate(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if len(text) > MAX_ERROR_BODY_CHARS:
        return text[:MAX_ERROR_BODY_CHARS] + "..."
    return text


def _describe_transport_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
