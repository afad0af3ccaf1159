"""Validated, immutable views of the ARI objects and events the bridge consumes.

Everything Asterisk sends is loaded through a marshmallow schema before the call-flow code sees
it. Fields the app relies on (the channel of a channel event, a Dial's ``dialstatus``, a
transfer's ``exten``...) are required, so a malformed message fails loudly here rather than as an
``AttributeError`` deep in a handler. Incidental fields are optional, and unknown fields are
dropped (``raw`` keeps the original JSON), so a newer Asterisk adding fields never breaks loading.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load

__all__ = [
    "EVENT_TYPES",
    "AriSchemaError",
    "Bridge",
    "CallerId",
    "Channel",
    "DialplanCEP",
    "Event",
    "EventSchemaError",
    "load_bridge",
    "load_bridges",
    "load_channel",
    "load_channels",
    "parse_event",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- public entry points


def parse_event(message: str | bytes | Mapping[str, Any]) -> Event | None:
    """Load one event from the ARI websocket.

    Returns None for event types the app does not consume. Raises :class:`EventSchemaError`
    when the message is not JSON, has no ``type``, or a consumed type has an invalid payload.
    """
    data = _decode_message(message)
    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise EventSchemaError(None, {"type": ["Missing or not a string."]})
    schema = _EVENT_SCHEMAS.get(event_type)
    if schema is None:
        logger.debug("ignoring unknown event type %s", event_type)
        return None
    try:
        event: Event = schema.load(data)
    except ValidationError as exc:
        raise EventSchemaError(event_type, exc.messages) from exc
    return event


def load_channel(data: Any) -> Channel:
    """Load a Channel object from a REST response."""
    result: Channel = _load_object(_CHANNEL_SCHEMA, "Channel", data)
    return result


def load_channels(data: Any) -> list[Channel]:
    """Load a list of Channel objects from a REST response."""
    return [load_channel(item) for item in _require_list("Channel", data)]


def load_bridge(data: Any) -> Bridge:
    """Load a Bridge object from a REST response."""
    result: Bridge = _load_object(_BRIDGE_SCHEMA, "Bridge", data)
    return result


def load_bridges(data: Any) -> list[Bridge]:
    """Load a list of Bridge objects from a REST response."""
    return [load_bridge(item) for item in _require_list("Bridge", data)]


# --------------------------------------------------------------------------- errors


class AriSchemaError(ValueError):
    """Something Asterisk sent does not match the ARI model we rely on."""

    def __init__(self, kind: str, messages: Any) -> None:
        self.kind = kind
        self.messages = messages
        super().__init__(f"invalid ARI {kind}: {messages}")


class EventSchemaError(AriSchemaError):
    """An event (``event_type`` None if the type itself is unreadable) failed validation."""

    def __init__(self, event_type: str | None, messages: Any) -> None:
        self.event_type = event_type
        super().__init__(f"{event_type or 'event'} event", messages)


# --------------------------------------------------------------------------- loaded objects


@dataclass(frozen=True, slots=True)
class CallerId:
    name: str
    number: str


@dataclass(frozen=True, slots=True)
class DialplanCEP:
    """Dialplan position: context, extension, priority, plus the running application."""

    context: str
    exten: str
    priority: int
    app_name: str | None = None
    app_data: str | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    state: str
    caller: CallerId
    connected: CallerId
    dialplan: DialplanCEP
    creationtime: str
    language: str
    protocol_id: str | None = None
    accountcode: str | None = None
    caller_rdnis: str | None = None
    tenantid: str | None = None
    # Only present for variables listed in ari.conf/channelvars.
    channelvars: Mapping[str, str] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class Bridge:
    id: str
    technology: str
    bridge_type: str
    bridge_class: str
    creator: str
    name: str
    channels: tuple[str, ...]
    creationtime: str | None = None
    video_mode: str | None = None
    video_source_id: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One ARI event, flattened: fields a given type does not carry are None.

    ``channel`` is the channel the event is about. Most types send it as ``channel``; for
    BridgeAttendedTransfer it is ``transferer_first_leg`` and for ChannelTransfer (a SIP REFER)
    it is ``referred_by.source_channel``, so routing by channel id works for every type.
    """

    type: str
    application: str
    timestamp: str | None = None
    asterisk_id: str | None = None
    channel: Channel | None = None
    bridge: Bridge | None = None
    replace_channel: Channel | None = None
    # Dial
    peer: Channel | None = None
    caller: Channel | None = None
    forwarded: Channel | None = None
    dialstatus: str | None = None
    dialstring: str | None = None
    forward: str | None = None
    # StasisStart
    args: tuple[str, ...] = ()
    # ChannelDestroyed / ChannelHangupRequest
    cause: int | None = None
    cause_txt: str | None = None
    tech_cause: int | None = None
    soft: bool | None = None
    # ChannelVarset
    variable: str | None = None
    value: str | None = None
    # ChannelDtmfReceived
    digit: str | None = None
    duration_ms: int | None = None
    # ChannelDialplan / ChannelCallerId
    dialplan_app: str | None = None
    dialplan_app_data: str | None = None
    caller_presentation: int | None = None
    caller_presentation_txt: str | None = None
    # Transfers
    transferee: Channel | None = None
    transfer_target: Channel | None = None
    transferer_second_leg: Channel | None = None
    exten: str | None = None
    context: str | None = None
    result: str | None = None
    is_external: bool | None = None
    destination_type: str | None = None
    refer_to: str | None = None
    state: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def channel_id(self) -> str | None:
        return self.channel.id if self.channel is not None else None


# --------------------------------------------------------------------------- object schemas


class _Schema(Schema):
    class Meta:
        unknown = EXCLUDE


def _optional_str() -> fields.Str:
    return fields.Str(load_default=None)


def _optional_int() -> fields.Int:
    return fields.Int(load_default=None)


class CallerIdSchema(_Schema):
    name = fields.Str(required=True)
    number = fields.Str(required=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> CallerId:
        return CallerId(**data)


class DialplanCEPSchema(_Schema):
    context = fields.Str(required=True)
    exten = fields.Str(required=True)
    priority = fields.Int(required=True)
    app_name = _optional_str()
    app_data = _optional_str()

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> DialplanCEP:
        return DialplanCEP(**data)


class ChannelSchema(_Schema):
    id = fields.Str(required=True)
    name = fields.Str(required=True)
    state = fields.Str(required=True)
    caller = fields.Nested(CallerIdSchema, required=True)
    connected = fields.Nested(CallerIdSchema, required=True)
    dialplan = fields.Nested(DialplanCEPSchema, required=True)
    creationtime = fields.Str(required=True)
    language = fields.Str(required=True)
    protocol_id = _optional_str()
    accountcode = _optional_str()
    caller_rdnis = _optional_str()
    tenantid = _optional_str()
    channelvars = fields.Dict(keys=fields.Str(), values=fields.Str(), load_default=None)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Channel:
        return Channel(**data)


class BridgeSchema(_Schema):
    id = fields.Str(required=True)
    technology = fields.Str(required=True)
    bridge_type = fields.Str(required=True)
    bridge_class = fields.Str(required=True)
    creator = fields.Str(required=True)
    name = fields.Str(required=True)
    channels = fields.List(fields.Str(), required=True)
    creationtime = _optional_str()
    video_mode = _optional_str()
    video_source_id = _optional_str()

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Bridge:
        return Bridge(**{**data, "channels": tuple(data["channels"])})


def _channel(*, required: bool) -> fields.Nested:
    if required:
        return fields.Nested(ChannelSchema, required=True)
    return fields.Nested(ChannelSchema, load_default=None)


def _bridge(*, required: bool) -> fields.Nested:
    if required:
        return fields.Nested(BridgeSchema, required=True)
    return fields.Nested(BridgeSchema, load_default=None)


# --------------------------------------------------------------------------- event schemas


class _EventSchema(_Schema):
    """Fields every event carries; subclasses add their own and may remap in ``_fields``."""

    type = fields.Str(required=True)
    application = fields.Str(required=True)
    timestamp = _optional_str()
    asterisk_id = _optional_str()

    def _fields(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @post_load(pass_original=True)
    def _make(self, data: dict[str, Any], original: Mapping[str, Any], **_: Any) -> Event:
        return Event(**self._fields(data), raw=original)


class _ChannelEventSchema(_EventSchema):
    channel = _channel(required=True)


class StasisStartSchema(_ChannelEventSchema):
    args = fields.List(fields.Str(), load_default=list)
    replace_channel = _channel(required=False)

    def _fields(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "args": tuple(data["args"])}


class StasisEndSchema(_ChannelEventSchema):
    pass


class ChannelStateChangeSchema(_ChannelEventSchema):
    pass


class ChannelDestroyedSchema(_ChannelEventSchema):
    cause = fields.Int(required=True)
    cause_txt = fields.Str(required=True)
    tech_cause = _optional_int()


class ChannelHangupRequestSchema(_ChannelEventSchema):
    cause = _optional_int()
    tech_cause = _optional_int()
    soft = fields.Bool(load_default=None)


class ChannelVarsetSchema(_EventSchema):
    variable = fields.Str(required=True)
    value = fields.Str(required=True)
    # Absent when a global variable was set.
    channel = _channel(required=False)


class DialSchema(_EventSchema):
    peer = _channel(required=True)
    # Empty while the dial is in progress; ANSWER, BUSY, NOANSWER, CANCEL... when it ends.
    dialstatus = fields.Str(required=True)
    caller = _channel(required=False)
    forwarded = _channel(required=False)
    forward = _optional_str()
    dialstring = _optional_str()


class ChannelEnteredBridgeSchema(_EventSchema):
    bridge = _bridge(required=True)
    channel = _channel(required=False)


class ChannelLeftBridgeSchema(_ChannelEventSchema):
    bridge = _bridge(required=True)


class _BridgeEventSchema(_EventSchema):
    bridge = _bridge(required=True)


class BridgeCreatedSchema(_BridgeEventSchema):
    pass


class BridgeDestroyedSchema(_BridgeEventSchema):
    pass


class BridgeBlindTransferSchema(_ChannelEventSchema):
    exten = fields.Str(required=True)
    context = fields.Str(required=True)
    # Success, Fail, Invalid or Not Permitted.
    result = fields.Str(required=True)
    is_external = fields.Bool(required=True)
    replace_channel = _channel(required=False)
    transferee = _channel(required=False)
    bridge = _bridge(required=False)


class BridgeAttendedTransferSchema(_EventSchema):
    # Loose on purpose: the shape varies with destination_type (bridge, application, link,
    # threeway, fail) and we only need enough to find the call; ``raw`` has the rest.
    transferer_first_leg = _channel(required=False)
    transferer_second_leg = _channel(required=False)
    transferer_first_leg_bridge = _bridge(required=False)
    replace_channel = _channel(required=False)
    transferee = _channel(required=False)
    transfer_target = _channel(required=False)
    result = _optional_str()
    is_external = fields.Bool(load_default=None)
    destination_type = _optional_str()

    def _fields(self, data: dict[str, Any]) -> dict[str, Any]:
        fields_ = dict(data)
        fields_["channel"] = fields_.pop("transferer_first_leg")
        fields_["bridge"] = fields_.pop("transferer_first_leg_bridge")
        return fields_


class _RequiredDestinationSchema(_Schema):
    protocol_id = _optional_str()
    destination = _optional_str()


class _ReferToSchema(_Schema):
    requested_destination = fields.Nested(_RequiredDestinationSchema, load_default=None)
    destination_channel = _channel(required=False)
    connected_channel = _channel(required=False)
    bridge = _bridge(required=False)


class _ReferredBySchema(_Schema):
    source_channel = _channel(required=False)
    connected_channel = _channel(required=False)
    bridge = _bridge(required=False)


class ChannelTransferSchema(_EventSchema):
    # Sent for a SIP REFER when the transfer is handed to ARI; loose like the attended variant.
    state = _optional_str()
    refer_to = fields.Nested(_ReferToSchema, load_default=None)
    referred_by = fields.Nested(_ReferredBySchema, load_default=None)

    def _fields(self, data: dict[str, Any]) -> dict[str, Any]:
        fields_ = dict(data)
        refer_to = fields_.pop("refer_to") or {}
        referred_by = fields_.pop("referred_by") or {}
        destination = refer_to.get("requested_destination") or {}
        fields_["refer_to"] = destination.get("destination")
        fields_["transfer_target"] = refer_to.get("destination_channel")
        fields_["channel"] = referred_by.get("source_channel")
        fields_["bridge"] = referred_by.get("bridge")
        return fields_


class ChannelDtmfReceivedSchema(_ChannelEventSchema):
    digit = fields.Str(required=True)
    duration_ms = _optional_int()


class ChannelCallerIdSchema(_ChannelEventSchema):
    caller_presentation = _optional_int()
    caller_presentation_txt = _optional_str()


class ChannelDialplanSchema(_ChannelEventSchema):
    dialplan_app = _optional_str()
    dialplan_app_data = _optional_str()


class ChannelConnectedLineSchema(_ChannelEventSchema):
    pass


class ApplicationReplacedSchema(_EventSchema):
    pass


class ApplicationRegisteredSchema(_EventSchema):
    pass


_EVENT_SCHEMAS: dict[str, _EventSchema] = {
    "StasisStart": StasisStartSchema(),
    "StasisEnd": StasisEndSchema(),
    "ChannelStateChange": ChannelStateChangeSchema(),
    "ChannelDestroyed": ChannelDestroyedSchema(),
    "ChannelHangupRequest": ChannelHangupRequestSchema(),
    "ChannelVarset": ChannelVarsetSchema(),
    "Dial": DialSchema(),
    "ChannelEnteredBridge": ChannelEnteredBridgeSchema(),
    "ChannelLeftBridge": ChannelLeftBridgeSchema(),
    "BridgeCreated": BridgeCreatedSchema(),
    "BridgeDestroyed": BridgeDestroyedSchema(),
    "BridgeBlindTransfer": BridgeBlindTransferSchema(),
    "BridgeAttendedTransfer": BridgeAttendedTransferSchema(),
    "ChannelTransfer": ChannelTransferSchema(),
    "ChannelDtmfReceived": ChannelDtmfReceivedSchema(),
    "ChannelCallerId": ChannelCallerIdSchema(),
    "ChannelDialplan": ChannelDialplanSchema(),
    "ChannelConnectedLine": ChannelConnectedLineSchema(),
    "ApplicationReplaced": ApplicationReplacedSchema(),
    "ApplicationRegistered": ApplicationRegisteredSchema(),
}

EVENT_TYPES: frozenset[str] = frozenset(_EVENT_SCHEMAS)

_CHANNEL_SCHEMA = ChannelSchema()
_BRIDGE_SCHEMA = BridgeSchema()


# --------------------------------------------------------------------------- helpers


def _decode_message(message: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(message, Mapping):
        return message
    try:
        data = json.loads(message)
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise EventSchemaError(None, {"_json": [f"Not valid JSON: {exc}"]}) from exc
    if not isinstance(data, dict):
        raise EventSchemaError(None, {"_json": [f"Expected a JSON object, got {type(data)}."]})
    return data


def _load_object(schema: Schema, kind: str, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise AriSchemaError(kind, {"_schema": [f"Expected a JSON object, got {type(data)}."]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise AriSchemaError(kind, exc.messages) from exc


def _require_list(kind: str, data: Any) -> Sequence[Any]:
    if not isinstance(data, list):
        raise AriSchemaError(f"{kind} list", {"_schema": [f"Expected a list, got {type(data)}."]})
    return data
