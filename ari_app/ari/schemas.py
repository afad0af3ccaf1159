"""Validated, immutable views of the ARI objects and events the bridge consumes.

Everything Asterisk sends is decoded and validated with msgspec before the call-flow code sees
it: one C pass turns the websocket frame into typed objects, so the check every event gets costs
a few microseconds. Fields the app relies on (the channel of a channel event, a Dial's
``dialstatus``, a transfer's ``exten``...) are required, so a malformed message fails loudly here
rather than as an ``AttributeError`` deep in a handler. Incidental fields are optional, and
unknown fields are dropped (``raw`` keeps the original JSON), so a newer Asterisk adding fields
never breaks loading.

Channel, Bridge, CallerId, DialplanCEP and Event are frozen msgspec Structs (they replaced
frozen dataclasses and keep their fields, order, defaults, equality and hashing). msgspec decodes
straight into Channel and friends. Each consumed event type has a private Struct saying which
fields it requires; those form one union tagged by ``type``, and the decoded one is flattened
into an :class:`Event`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, Union

import msgspec

__all__ = [
    "EVENT_TYPES",
    "AriSchemaError",
    "Bridge",
    "CallerId",
    "Channel",
    "DialplanCEP",
    "Event",
    "EventSchemaError",
    "event_type_of",
    "load_bridge",
    "load_bridges",
    "load_channel",
    "load_channels",
    "parse_event",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


# --------------------------------------------------------------------------- public entry points


def parse_event(
    message: str | bytes | Mapping[str, Any], *, types: frozenset[str] | None = None
) -> Event | None:
    """Load one event from the ARI websocket.

    Returns None for event types the app does not consume, and for types outside ``types``
    when given (those are not validated). Raises :class:`EventSchemaError` when the message is
    not JSON, has no ``type``, or a consumed type has an invalid payload.

    JSON text (str or bytes) is decoded and validated in one msgspec pass; an already decoded
    mapping is converted the same way.
    """
    raw: Mapping[str, Any]
    try:
        if isinstance(message, Mapping):
            raw = message
            event_type = _readable_type(message)
            struct = _EVENT_STRUCTS.get(event_type)
            if struct is None or (types is not None and event_type not in types):
                _log_ignored(event_type)
                return None
            loaded = msgspec.convert(message, struct)
        else:
            decoder = _decoder_for(types)
            if decoder is None:
                _log_ignored(_readable_type(message))
                return None
            raw = _RawJson(message)
            loaded = decoder.decode(message)
    except msgspec.ValidationError as exc:
        # From JSON text, the rare path: a type outside the union (its tag matched no Struct)
        # or an invalid payload.
        event_type = _readable_type(message)
        if event_type not in EVENT_TYPES or (types is not None and event_type not in types):
            _log_ignored(event_type)
            return None
        raise EventSchemaError(event_type, _messages(exc)) from exc
    except msgspec.DecodeError as exc:  # not JSON (ValidationError, a subclass, is caught above)
        raise EventSchemaError(None, {"_json": [f"Not valid JSON: {exc}"]}) from exc
    return loaded.to_event(raw)


def event_type_of(message: str | bytes | Mapping[str, Any]) -> str | None:
    """The ``type`` of an event message without validating the rest; None if unreadable."""
    if isinstance(message, Mapping):
        event_type = message.get("type")
    else:
        try:
            event_type = _TYPE_DECODER.decode(message).type
        except msgspec.DecodeError:
            return None
    return event_type if isinstance(event_type, str) else None


def load_channel(data: Any) -> Channel:
    """Load a Channel object from a REST response."""
    return _load_object(Channel, "Channel", data)


def load_channels(data: Any) -> list[Channel]:
    """Load a list of Channel objects from a REST response."""
    return [load_channel(item) for item in _require_list("Channel", data)]


def load_bridge(data: Any) -> Bridge:
    """Load a Bridge object from a REST response."""
    return _load_object(Bridge, "Bridge", data)


def load_bridges(data: Any) -> list[Bridge]:
    """Load a list of Bridge objects from a REST response."""
    return [load_bridge(item) for item in _require_list("Bridge", data)]


# --------------------------------------------------------------------------- errors


class AriSchemaError(ValueError):
    """Something Asterisk sent does not match the ARI model we rely on.

    ``messages`` maps the offending field to its error, nested like the data
    (``{"channel": {"id": ["Missing data for required field."]}}``).
    """

    def __init__(self, kind: str, messages: Any) -> None:
        self.kind = kind
        self.messages = messages
        super().__init__(f"invalid ARI {kind}: {messages}")


class EventSchemaError(AriSchemaError):
    """An event (``event_type`` None if the type itself is unreadable) failed validation.

    ``messages`` is ``{"_json": [...]}`` exactly when the message is not JSON at all.
    """

    def __init__(self, event_type: str | None, messages: Any) -> None:
        self.event_type = event_type
        super().__init__(f"{event_type or 'event'} event", messages)


# --------------------------------------------------------------------------- loaded objects
#
# Frozen msgspec Structs: msgspec decodes straight into them (fields without a default are
# required, unknown fields are ignored), and building one is as cheap as building a tuple.
# They behave like the frozen dataclasses they replace: positional or keyword construction in
# field order, immutable, compared by value and hashable (``channelvars`` and ``raw`` are left
# out of the hash, and ``raw`` out of equality and repr).


class CallerId(msgspec.Struct, frozen=True, gc=False):
    name: str
    number: str


class DialplanCEP(msgspec.Struct, frozen=True, gc=False):
    """Dialplan position: context, extension, priority, plus the running application."""

    context: str
    exten: str
    priority: int
    app_name: str | None = None
    app_data: str | None = None


class Channel(msgspec.Struct, frozen=True):
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
    channelvars: Mapping[str, str] | None = None

    def __hash__(self) -> int:
        # Everything but the (unhashable) channelvars, which still take part in equality.
        return hash(
            (
                self.id,
                self.name,
                self.state,
                self.caller,
                self.connected,
                self.dialplan,
                self.creationtime,
                self.language,
                self.protocol_id,
                self.accountcode,
                self.caller_rdnis,
                self.tenantid,
            )
        )


class Bridge(msgspec.Struct, frozen=True):
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


class Event(msgspec.Struct, frozen=True):
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
    # ContactStatusChange: the AOR of the contact and its status (Reachable, Unreachable...)
    aor: str | None = None
    contact_status: str | None = None
    # The message as Asterisk sent it (decoded on first access when loaded from JSON text).
    # Not part of equality, hash or repr.
    raw: Mapping[str, Any] = msgspec.field(default_factory=dict)

    @property
    def channel_id(self) -> str | None:
        return self.channel.id if self.channel is not None else None

    def _key(self) -> tuple[Any, ...]:
        return msgspec.structs.astuple(self)[:-1]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Event)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self.__struct_fields__[:-1]
        )
        return f"Event({fields})"


# --------------------------------------------------------------------------- event structs
#
# One Struct per consumed type, tagged by ``type``. Fields without a default are required.
# ``kw_only`` lets a type add required fields after the optional common ones.


class _EventStruct(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """Fields every event carries; subclasses add their own and may remap in ``to_event``."""

    application: str
    timestamp: str | None = None
    asterisk_id: str | None = None

    # The ``type`` tag, set on each concrete class below.
    _type: ClassVar[str]

    def to_event(self, raw: Mapping[str, Any]) -> Event:
        # Struct fields are named like Event fields unless ``to_event`` is overridden.
        return Event(self._type, **msgspec.structs.asdict(self), raw=raw)


class _ChannelEventStruct(_EventStruct, kw_only=True):
    channel: Channel


class _StasisStart(_ChannelEventStruct, tag="StasisStart", kw_only=True):
    args: tuple[str, ...] = ()
    replace_channel: Channel | None = None


class _StasisEnd(_ChannelEventStruct, tag="StasisEnd", kw_only=True):
    pass


class _ChannelStateChange(_ChannelEventStruct, tag="ChannelStateChange", kw_only=True):
    pass


class _ChannelDestroyed(_ChannelEventStruct, tag="ChannelDestroyed", kw_only=True):
    cause: int
    cause_txt: str
    tech_cause: int | None = None


class _ChannelHangupRequest(_ChannelEventStruct, tag="ChannelHangupRequest", kw_only=True):
    cause: int | None = None
    tech_cause: int | None = None
    soft: bool | None = None


class _ChannelVarset(_EventStruct, tag="ChannelVarset", kw_only=True):
    variable: str
    value: str
    # Absent when a global variable was set.
    channel: Channel | None = None


class _Dial(_EventStruct, tag="Dial", kw_only=True):
    peer: Channel
    # Empty while the dial is in progress; ANSWER, BUSY, NOANSWER, CANCEL... when it ends.
    dialstatus: str
    caller: Channel | None = None
    forwarded: Channel | None = None
    forward: str | None = None
    dialstring: str | None = None


class _ChannelEnteredBridge(_EventStruct, tag="ChannelEnteredBridge", kw_only=True):
    bridge: Bridge
    channel: Channel | None = None


class _ChannelLeftBridge(_ChannelEventStruct, tag="ChannelLeftBridge", kw_only=True):
    bridge: Bridge


class _BridgeCreated(_EventStruct, tag="BridgeCreated", kw_only=True):
    bridge: Bridge


class _BridgeDestroyed(_EventStruct, tag="BridgeDestroyed", kw_only=True):
    bridge: Bridge


class _BridgeBlindTransfer(_ChannelEventStruct, tag="BridgeBlindTransfer", kw_only=True):
    exten: str
    context: str
    # Success, Fail, Invalid or Not Permitted.
    result: str
    is_external: bool
    replace_channel: Channel | None = None
    transferee: Channel | None = None
    bridge: Bridge | None = None


class _BridgeAttendedTransfer(_EventStruct, tag="BridgeAttendedTransfer", kw_only=True):
    # Loose on purpose: the shape varies with destination_type (bridge, application, link,
    # threeway, fail) and we only need enough to find the call; ``raw`` has the rest.
    transferer_first_leg: Channel | None = None
    transferer_second_leg: Channel | None = None
    transferer_first_leg_bridge: Bridge | None = None
    replace_channel: Channel | None = None
    transferee: Channel | None = None
    transfer_target: Channel | None = None
    result: str | None = None
    is_external: bool | None = None
    destination_type: str | None = None

    def to_event(self, raw: Mapping[str, Any]) -> Event:
        return Event(
            self._type,
            self.application,
            self.timestamp,
            self.asterisk_id,
            channel=self.transferer_first_leg,
            bridge=self.transferer_first_leg_bridge,
            transferer_second_leg=self.transferer_second_leg,
            replace_channel=self.replace_channel,
            transferee=self.transferee,
            transfer_target=self.transfer_target,
            result=self.result,
            is_external=self.is_external,
            destination_type=self.destination_type,
            raw=raw,
        )


class _RequestedDestination(msgspec.Struct, gc=False):
    protocol_id: str | None = None
    destination: str | None = None


class _ReferTo(msgspec.Struct, gc=False):
    requested_destination: _RequestedDestination | None = None
    destination_channel: Channel | None = None
    connected_channel: Channel | None = None
    bridge: Bridge | None = None


class _ReferredBy(msgspec.Struct, gc=False):
    source_channel: Channel | None = None
    connected_channel: Channel | None = None
    bridge: Bridge | None = None


class _ChannelTransfer(_EventStruct, tag="ChannelTransfer", kw_only=True):
    # Sent for a SIP REFER when the transfer is handed to ARI; loose like the attended variant.
    state: str | None = None
    refer_to: _ReferTo | None = None
    referred_by: _ReferredBy | None = None

    def to_event(self, raw: Mapping[str, Any]) -> Event:
        refer_to = self.refer_to or _ReferTo()
        referred_by = self.referred_by or _ReferredBy()
        destination = refer_to.requested_destination
        return Event(
            self._type,
            self.application,
            self.timestamp,
            self.asterisk_id,
            state=self.state,
            refer_to=destination.destination if destination is not None else None,
            transfer_target=refer_to.destination_channel,
            channel=referred_by.source_channel,
            bridge=referred_by.bridge,
            raw=raw,
        )


class _ChannelDtmfReceived(_ChannelEventStruct, tag="ChannelDtmfReceived", kw_only=True):
    digit: str
    duration_ms: int | None = None


class _ChannelCallerId(_ChannelEventStruct, tag="ChannelCallerId", kw_only=True):
    caller_presentation: int | None = None
    caller_presentation_txt: str | None = None


class _ChannelDialplan(_ChannelEventStruct, tag="ChannelDialplan", kw_only=True):
    dialplan_app: str | None = None
    dialplan_app_data: str | None = None


class _ChannelConnectedLine(_ChannelEventStruct, tag="ChannelConnectedLine", kw_only=True):
    pass


class _ApplicationReplaced(_EventStruct, tag="ApplicationReplaced", kw_only=True):
    pass


class _ContactInfo(msgspec.Struct, gc=False):
    uri: str
    contact_status: str
    aor: str


class _ContactStatusChange(_EventStruct, tag="ContactStatusChange", kw_only=True):
    contact_info: _ContactInfo

    def to_event(self, raw: Mapping[str, Any]) -> Event:
        return Event(
            self._type,
            application=self.application,
            timestamp=self.timestamp,
            asterisk_id=self.asterisk_id,
            aor=self.contact_info.aor,
            contact_status=self.contact_info.contact_status,
            raw=raw,
        )


class _ApplicationRegistered(_EventStruct, tag="ApplicationRegistered", kw_only=True):
    pass


_EVENT_STRUCTS: dict[str, type[_EventStruct]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (
        _StasisStart,
        _StasisEnd,
        _ChannelStateChange,
        _ChannelDestroyed,
        _ChannelHangupRequest,
        _ChannelVarset,
        _Dial,
        _ChannelEnteredBridge,
        _ChannelLeftBridge,
        _BridgeCreated,
        _BridgeDestroyed,
        _BridgeBlindTransfer,
        _BridgeAttendedTransfer,
        _ChannelTransfer,
        _ChannelDtmfReceived,
        _ChannelCallerId,
        _ChannelDialplan,
        _ChannelConnectedLine,
        _ApplicationReplaced,
        _ApplicationRegistered,
        _ContactStatusChange,
    )
}

for _name, _cls in _EVENT_STRUCTS.items():
    _cls._type = _name

EVENT_TYPES: frozenset[str] = frozenset(_EVENT_STRUCTS)


class _TypeOnly(msgspec.Struct, gc=False):
    type: Any = None


_TYPE_DECODER = msgspec.json.Decoder(_TypeOnly)


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=16)
def _decoder_for(types: frozenset[str] | None) -> msgspec.json.Decoder[_EventStruct] | None:
    """JSON decoder for the union of the consumed event types in ``types`` (all if None)."""
    wanted = EVENT_TYPES if types is None else EVENT_TYPES & types
    if not wanted:
        return None
    structs = tuple(_EVENT_STRUCTS[name] for name in sorted(wanted))
    union: Any = Union[structs]  # noqa: UP007 - a runtime union of a tuple of classes
    return msgspec.json.Decoder(union)


def _log_ignored(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        logger.debug("ignoring unknown event type %s", event_type)


def _readable_type(message: str | bytes | Mapping[str, Any]) -> str:
    """The event's type, or raise the EventSchemaError for a message without a usable one."""
    if isinstance(message, Mapping):
        event_type = message.get("type")
    else:
        try:
            event_type = _TYPE_DECODER.decode(message).type
        except msgspec.ValidationError as exc:  # valid JSON, but not an object
            raise EventSchemaError(None, {"_schema": [f"Not a JSON object: {exc}"]}) from exc
        except msgspec.DecodeError as exc:  # broken after the point validation failed at
            raise EventSchemaError(None, {"_json": [f"Not valid JSON: {exc}"]}) from exc
    if not isinstance(event_type, str) or not event_type:
        raise EventSchemaError(None, {"type": ["Missing or not a string."]})
    return event_type


class _RawJson(Mapping[str, Any]):
    """The JSON text of an event, decoded into a dict only if someone reads it."""

    __slots__ = ("_data", "_message")

    def __init__(self, message: str | bytes) -> None:
        self._message = message
        self._data: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            self._data = msgspec.json.decode(self._message, type=dict[str, Any])
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _RawJson):
            other = other._decoded()
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._decoded() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._decoded())


_ERROR_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_PATH_PART = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>[^\]]*)\]")


def _messages(exc: msgspec.ValidationError) -> dict[Any, Any]:
    """Turn msgspec's ``Expected `str`, got `int` - at `$.channel.id``` into nested dicts.

    The result names the field like marshmallow did: ``{"channel": {"id": ["Expected ..."]}}``;
    a missing field is ``["Missing data for required field."]`` under its own name.
    """
    match = _ERROR_AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    text = match["text"]
    path: list[Any] = []
    for part in _PATH_PART.finditer(match["path"] or ""):
        index = part["index"]
        if index is None:
            path.append(part["key"])
        else:
            path.append(int(index) if index.isdigit() else index)
    missing = _MISSING_FIELD.match(text)
    if missing is not None:
        path.append(missing["name"])
        text = "Missing data for required field."
    if not path:
        path.append("_schema")
    messages: Any = [text]
    for key in reversed(path):
        messages = {key: messages}
    result: dict[Any, Any] = messages
    return result


def _load_object(cls: type[_T], kind: str, data: Any) -> _T:
    if not isinstance(data, Mapping):
        raise AriSchemaError(kind, {"_schema": [f"Expected a JSON object, got {type(data)}."]})
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise AriSchemaError(kind, _messages(exc)) from exc


def _require_list(kind: str, data: Any) -> Sequence[Any]:
    if not isinstance(data, list):
        raise AriSchemaError(f"{kind} list", {"_schema": [f"Expected a list, got {type(data)}."]})
    return data
