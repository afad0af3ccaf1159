"""parse_event and object loading against event JSON shaped like Asterisk 22 sends it."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from msgspec.structs import replace

from ari_app.ari import (
    EVENT_TYPES,
    AriSchemaError,
    Bridge,
    CallerId,
    Channel,
    DialplanCEP,
    Event,
    EventSchemaError,
    EventStream,
    load_bridge,
    load_channel,
    parse_event,
)
from ari_app.ari.schemas import event_type_of, load_bridges, load_channels
from tests.fake_ari import channel_json as fake_channel_json

APP = "botbridge"
TS = "2025-03-14T10:21:07.512+0000"
ASTERISK_ID = "02:42:ac:11:00:02"
CALLER_ID = "1741947667.12"
BOT_ID = "1741947668.13"
BRIDGE_ID = "4b4d3c2e-6a7f-4f3e-9a55-0c1d2e3f4a5b"


def channel_json(
    channel_id: str = CALLER_ID,
    *,
    name: str = "PJSIP/contact-centre-0000000c",
    state: str = "Up",
    **extra: Any,
) -> dict[str, Any]:
    """A contact centre's caller, with every field a real one has filled in."""
    return fake_channel_json(
        channel_id,
        name=name,
        state=state,
        protocol_id="a84f2c5e-1b7d-4c41-9d7e-3f0b2c6d8e91",
        number="+441632960001",
        caller_name="Jane Doe",
        context="from-contact-centre",
        exten="bot-sales",
        priority=3,
        app_data=f"{APP},inbound",
        creationtime="2025-03-14T10:21:07.201+0000",
        **extra,
    )


def bridge_json(channels: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": BRIDGE_ID,
        "technology": "simple_bridge",
        "bridge_type": "mixing",
        "bridge_class": "stasis",
        "creator": "Stasis",
        "name": "call-1741947667.12",
        "channels": [CALLER_ID, BOT_ID] if channels is None else channels,
        "creationtime": "2025-03-14T10:21:08.004+0000",
        "video_mode": "none",
    }


def event_json(event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "timestamp": TS,
        **fields,
        "asterisk_id": ASTERISK_ID,
        "application": APP,
    }


BOT_CHANNEL = channel_json(
    BOT_ID,
    name="PJSIP/bot-vendor-0000000d",
    state="Down",
    dialplan={"context": "default", "exten": "s", "priority": 1, "app_name": "", "app_data": ""},
)

# (event JSON, expected attributes of the parsed Event)
SAMPLES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        event_json(
            "StasisStart",
            args=["inbound", "sales"],
            channel=channel_json(state="Ring"),
        ),
        {"channel_id": CALLER_ID, "args": ("inbound", "sales"), "replace_channel": None},
    ),
    (
        event_json(
            "StasisStart",
            args=[],
            channel=channel_json(BOT_ID),
            replace_channel=channel_json("1741947670.20", name="Local/s@xfer-00000002;2"),
        ),
        {"channel_id": BOT_ID, "args": (), "replace_channel.id": "1741947670.20"},
    ),
    (event_json("StasisEnd", channel=channel_json()), {"channel_id": CALLER_ID}),
    (
        event_json("ChannelStateChange", channel=channel_json(state="Up")),
        {"channel.state": "Up"},
    ),
    (
        event_json(
            "ChannelDestroyed",
            cause=16,
            cause_txt="Normal Clearing",
            tech_cause=200,
            channel=channel_json(state="Down"),
        ),
        {"cause": 16, "cause_txt": "Normal Clearing", "tech_cause": 200},
    ),
    (
        event_json("ChannelHangupRequest", cause=16, soft=True, channel=channel_json()),
        {"cause": 16, "soft": True, "channel_id": CALLER_ID},
    ),
    (
        event_json("ChannelHangupRequest", channel=channel_json()),
        {"cause": None, "soft": None},
    ),
    (
        event_json(
            "ChannelVarset",
            variable="BRIDGEPEER",
            value="PJSIP/bot-vendor-0000000d",
            channel=channel_json(),
        ),
        {"variable": "BRIDGEPEER", "value": "PJSIP/bot-vendor-0000000d"},
    ),
    (
        event_json("ChannelVarset", variable="GLOBAL_MODE", value=""),
        {"variable": "GLOBAL_MODE", "value": "", "channel": None},
    ),
    (
        event_json(
            "Dial",
            dialstatus="",
            forward="",
            dialstring="bot-vendor/sip:bot@bots.example.net",
            peer=BOT_CHANNEL,
        ),
        {"peer.id": BOT_ID, "caller": None, "dialstatus": ""},
    ),
    (
        event_json(
            "Dial",
            dialstatus="ANSWER",
            forward="",
            dialstring="bot-vendor/sip:bot@bots.example.net",
            caller=channel_json(),
            peer=channel_json(BOT_ID, state="Up"),
        ),
        {"peer.id": BOT_ID, "caller.id": CALLER_ID, "dialstatus": "ANSWER"},
    ),
    (
        event_json("ChannelEnteredBridge", bridge=bridge_json(), channel=channel_json()),
        {"bridge.id": BRIDGE_ID, "bridge.channels": (CALLER_ID, BOT_ID)},
    ),
    (
        event_json("ChannelLeftBridge", bridge=bridge_json([BOT_ID]), channel=channel_json()),
        {"bridge.channels": (BOT_ID,), "channel_id": CALLER_ID},
    ),
    (event_json("BridgeCreated", bridge=bridge_json([])), {"bridge.id": BRIDGE_ID}),
    (
        event_json("BridgeDestroyed", bridge=bridge_json([])),
        {"bridge.bridge_class": "stasis", "channel": None},
    ),
    (
        event_json(
            "BridgeBlindTransfer",
            channel=channel_json(BOT_ID),
            exten="2001",
            context="agents",
            result="Success",
            is_external=True,
            transferee=channel_json(),
            bridge=bridge_json(),
        ),
        {
            "channel_id": BOT_ID,
            "exten": "2001",
            "context": "agents",
            "result": "Success",
            "is_external": True,
            "transferee.id": CALLER_ID,
            "bridge.id": BRIDGE_ID,
        },
    ),
    (
        event_json(
            "BridgeAttendedTransfer",
            transferer_first_leg=channel_json(BOT_ID),
            transferer_second_leg=channel_json("1741947690.30"),
            result="Success",
            is_external=False,
            destination_type="bridge",
            destination_bridge=BRIDGE_ID,
            transferer_first_leg_bridge=bridge_json(),
        ),
        {
            "channel_id": BOT_ID,
            "transferer_second_leg.id": "1741947690.30",
            "bridge.id": BRIDGE_ID,
            "destination_type": "bridge",
            "is_external": False,
        },
    ),
    (
        event_json(
            "ChannelTransfer",
            state="channel_progress",
            refer_to={
                "requested_destination": {
                    "protocol_id": "c3d1e8a2-55aa-4b0c-8f1e-7a6b5c4d3e2f",
                    "destination": "sip:+441632960999@pbx.example.com",
                },
            },
            referred_by={"source_channel": channel_json(BOT_ID), "bridge": bridge_json()},
        ),
        {
            "channel_id": BOT_ID,
            "state": "channel_progress",
            "refer_to": "sip:+441632960999@pbx.example.com",
            "bridge.id": BRIDGE_ID,
            "transfer_target": None,
        },
    ),
    (
        event_json("ChannelDtmfReceived", digit="#", duration_ms=120, channel=channel_json()),
        {"digit": "#", "duration_ms": 120},
    ),
    (
        event_json(
            "ChannelCallerId",
            caller_presentation=0,
            caller_presentation_txt="Presentation Allowed, Not Screened",
            channel=channel_json(),
        ),
        {"caller_presentation": 0, "channel.caller": CallerId("Jane Doe", "+441632960001")},
    ),
    (
        event_json(
            "ChannelDialplan",
            dialplan_app="Stasis",
            dialplan_app_data=f"{APP},inbound",
            channel=channel_json(),
        ),
        {"dialplan_app": "Stasis", "dialplan_app_data": f"{APP},inbound"},
    ),
    (event_json("ChannelConnectedLine", channel=channel_json()), {"channel_id": CALLER_ID}),
    (event_json("ApplicationReplaced"), {"channel": None, "application": APP}),
    (event_json("ApplicationRegistered"), {"channel": None, "application": APP}),
    # as Asterisk 22 sent it for a bot health AOR whose OPTIONS probe timed out
    (
        event_json(
            "ContactStatusChange",
            endpoint={
                "technology": "PJSIP",
                "resource": "botbridge-bot-1",
                "state": "offline",
                "channel_ids": [],
            },
            contact_info={
                "uri": "sip:dead@127.0.0.1:55075",
                "contact_status": "Unreachable",
                "aor": "botbridge-bot-1",
                "roundtrip_usec": "0",
            },
        ),
        {"channel": None, "aor": "botbridge-bot-1", "contact_status": "Unreachable"},
    ),
]


def _attr(event: Event, dotted: str) -> Any:
    value: Any = event
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(
    ("payload", "expected"),
    SAMPLES,
    ids=[f"{i}-{payload['type']}" for i, (payload, _) in enumerate(SAMPLES)],
)
def test_parse_event_samples(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    event = parse_event(json.dumps(payload))

    assert event is not None
    assert event.type == payload["type"]
    assert event.application == APP
    assert event.timestamp == TS
    assert event.asterisk_id == ASTERISK_ID
    assert event.raw == payload
    for dotted, value in expected.items():
        assert _attr(event, dotted) == value, dotted


def test_samples_cover_every_consumed_event_type() -> None:
    assert {payload["type"] for payload, _ in SAMPLES} == EVENT_TYPES


def test_parse_event_accepts_str_bytes_and_dict_alike() -> None:
    payload = SAMPLES[0][0]
    from_str = parse_event(json.dumps(payload))
    from_bytes = parse_event(json.dumps(payload).encode())
    from_dict = parse_event(payload)

    assert from_str == from_bytes == from_dict


def test_channel_is_fully_loaded() -> None:
    event = parse_event(
        event_json(
            "StasisStart",
            args=[],
            channel=channel_json(channelvars={"PJSIP_HEADER(read,X-UUI)": "00c8"}),
        )
    )

    assert event is not None
    assert event.channel == Channel(
        id=CALLER_ID,
        name="PJSIP/contact-centre-0000000c",
        state="Up",
        caller=CallerId(name="Jane Doe", number="+441632960001"),
        connected=CallerId(name="", number=""),
        dialplan=DialplanCEP(
            context="from-contact-centre",
            exten="bot-sales",
            priority=3,
            app_name="Stasis",
            app_data=f"{APP},inbound",
        ),
        creationtime="2025-03-14T10:21:07.201+0000",
        language="en",
        protocol_id="a84f2c5e-1b7d-4c41-9d7e-3f0b2c6d8e91",
        accountcode="",
        channelvars={"PJSIP_HEADER(read,X-UUI)": "00c8"},
    )


def test_loaded_objects_are_frozen_and_hashable() -> None:
    event = parse_event(event_json("StasisEnd", channel=channel_json(channelvars={"A": "1"})))

    assert event is not None
    with pytest.raises(AttributeError):
        event.type = "StasisStart"  # type: ignore[misc]
    assert hash(event) == hash(event)
    assert event.channel is not None
    assert hash(event.channel) == hash(event.channel)


def test_unknown_event_type_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    payload = event_json("PlaybackStarted", playback={"id": "pb-1", "state": "playing"})

    with caplog.at_level(logging.DEBUG, logger="ari_app.ari.schemas"):
        assert parse_event(payload) is None

    assert "ignoring unknown event type PlaybackStarted" in caplog.text


def test_extra_unknown_fields_are_accepted_everywhere() -> None:
    payload = event_json(
        "ChannelEnteredBridge",
        bridge={**bridge_json(), "bridgevars": {"X": "1"}, "future_bridge_field": 7},
        channel=channel_json(
            tenantid="acme",
            caller_rdnis="+441632960002",
            future_channel_field={"nested": True},
            caller={"name": "Jane Doe", "number": "+441632960001", "future": 1},
        ),
        future_event_field=["anything"],
    )

    event = parse_event(payload)

    assert event is not None
    assert event.channel is not None
    assert event.channel.tenantid == "acme"
    assert event.channel.caller_rdnis == "+441632960002"
    assert event.raw["future_event_field"] == ["anything"]


def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    result = copy.deepcopy(data)
    target = result
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return result


@pytest.mark.parametrize(
    ("payload", "bad_field"),
    [
        (_without(SAMPLES[0][0], "channel"), "channel"),
        (_without(SAMPLES[0][0], "channel", "id"), "channel"),
        (_without(SAMPLES[0][0], "application"), "application"),
        (event_json("StasisStart", args="inbound", channel=channel_json()), "args"),
        (event_json("ChannelDestroyed", cause="sixteen", channel=channel_json()), "cause"),
        (event_json("Dial", dialstatus="ANSWER"), "peer"),
        (event_json("ChannelLeftBridge", channel=channel_json()), "bridge"),
        (event_json("ChannelEnteredBridge", bridge={"id": BRIDGE_ID}), "bridge"),
        (event_json("ChannelDtmfReceived", channel=channel_json()), "digit"),
        (
            event_json(
                "BridgeBlindTransfer",
                channel=channel_json(),
                context="agents",
                result="Success",
                is_external=False,
            ),
            "exten",
        ),
        (event_json("StasisEnd", channel="1741947667.12"), "channel"),
    ],
    ids=lambda value: value if isinstance(value, str) else value["type"],
)
def test_invalid_payload_raises_event_schema_error(payload: dict[str, Any], bad_field: str) -> None:
    with pytest.raises(EventSchemaError) as excinfo:
        parse_event(payload)

    error = excinfo.value
    assert isinstance(error, ValueError)
    assert error.event_type == payload["type"]
    assert bad_field in error.messages
    assert payload["type"] in str(error)


@pytest.mark.parametrize(
    "message",
    ["{not json", b"\xff\xfe", "[1, 2]", json.dumps({"application": APP}), '{"type": 5}'],
    ids=["broken-json", "not-utf8", "json-array", "no-type", "type-not-string"],
)
def test_unreadable_message_raises_event_schema_error(message: str | bytes) -> None:
    with pytest.raises(EventSchemaError) as excinfo:
        parse_event(message)

    assert excinfo.value.event_type is None


def test_load_channel_and_bridge_from_rest_replies() -> None:
    assert load_channel(channel_json()).id == CALLER_ID
    assert load_channels([channel_json(), BOT_CHANNEL])[1].name == "PJSIP/bot-vendor-0000000d"
    bridge = load_bridge(bridge_json())
    assert bridge == Bridge(
        id=BRIDGE_ID,
        technology="simple_bridge",
        bridge_type="mixing",
        bridge_class="stasis",
        creator="Stasis",
        name="call-1741947667.12",
        channels=(CALLER_ID, BOT_ID),
        creationtime="2025-03-14T10:21:08.004+0000",
        video_mode="none",
    )
    assert load_bridges([]) == []


@pytest.mark.parametrize(
    "loader, data",
    [
        (load_channel, {"id": CALLER_ID}),
        (load_channel, [channel_json()]),
        (load_bridge, {**bridge_json(), "channels": "a,b"}),
        (load_channels, channel_json()),
    ],
    ids=["channel-missing-fields", "channel-not-object", "bridge-bad-channels", "not-a-list"],
)
def test_invalid_rest_objects_raise_schema_error(loader: Any, data: Any) -> None:
    with pytest.raises(AriSchemaError):
        loader(data)


def test_error_messages_name_the_nested_field() -> None:
    missing = _without(SAMPLES[0][0], "channel", "dialplan", "priority")
    wrong = event_json("StasisStart", args=["a", 5], channel=channel_json())

    with pytest.raises(EventSchemaError) as missing_info:
        parse_event(json.dumps(missing))
    with pytest.raises(EventSchemaError) as wrong_info:
        parse_event(wrong)

    assert missing_info.value.messages == {
        "channel": {"dialplan": {"priority": ["Missing data for required field."]}}
    }
    assert wrong_info.value.messages == {"args": {1: ["Expected `str`, got `int`"]}}


def test_truncated_json_is_not_json() -> None:
    text = json.dumps(event_json("StasisEnd", application=5, channel=channel_json()))

    with pytest.raises(EventSchemaError) as excinfo:
        parse_event(text[:40])

    assert excinfo.value.event_type is None
    assert "_json" in excinfo.value.messages


@pytest.mark.parametrize("as_text", [True, False], ids=["text", "mapping"])
def test_types_filter_skips_other_types_unvalidated(as_text: bool) -> None:
    wanted = frozenset({"StasisStart", "PlaybackStarted"})
    good, _ = SAMPLES[0]
    bad_dial = event_json("Dial", dialstatus=7)
    bad_start = _without(good, "channel")

    def parse(payload: dict[str, Any]) -> Event | None:
        return parse_event(json.dumps(payload) if as_text else payload, types=wanted)

    assert parse(good) == parse_event(good)
    assert parse(bad_dial) is None
    assert parse(event_json("PlaybackStarted")) is None
    with pytest.raises(EventSchemaError, match="StasisStart"):
        parse(bad_start)
    assert parse_event(json.dumps(good), types=frozenset()) is None


def test_event_type_of_reads_only_the_type() -> None:
    assert event_type_of(json.dumps(event_json("Dial", peer="not a channel"))) == "Dial"
    assert event_type_of(b'{"type": "StasisEnd"}') == "StasisEnd"
    assert event_type_of({"type": "StasisEnd"}) == "StasisEnd"
    for unreadable in ["{nope", "[1]", '{"type": 5}', "{}"]:
        assert event_type_of(unreadable) is None


def test_raw_is_decoded_lazily_and_left_out_of_equality_and_repr() -> None:
    payload = SAMPLES[0][0]
    event = parse_event(json.dumps(payload))

    assert event is not None
    assert "raw" not in repr(event)
    assert dict(event.raw) == payload
    assert event.raw["channel"]["id"] == CALLER_ID
    assert event == replace(event, raw={})
    assert hash(event) == hash(replace(event, raw={"other": 1}))


def test_objects_build_positionally_like_the_old_dataclasses() -> None:
    channel = Channel(
        id="c1",
        name="PJSIP/x-1",
        state="Up",
        caller=CallerId("", "100"),
        connected=CallerId("", ""),
        dialplan=DialplanCEP("ctx", "s", 1, app_name="Stasis"),
        creationtime="",
        language="en",
    )
    bridge = Bridge("b1", "simple_bridge", "mixing", "user", "Queue", "", ("c1",))
    event = Event("ChannelDestroyed", APP, channel=channel, cause=16)

    assert channel.dialplan.app_data is None and channel.channelvars is None
    assert bridge.channels == ("c1",) and bridge.creationtime is None
    assert event.channel_id == "c1" and event.args == () and dict(event.raw) == {}
    with_vars = replace(channel, channelvars={"A": "1"})
    assert hash(with_vars) == hash(channel)
    assert with_vars != channel
    with pytest.raises(AttributeError):
        channel.id = "c2"  # type: ignore[misc]


def _stream(types: frozenset[str] | None) -> EventStream:
    return EventStream("http://127.0.0.1:8088/ari", "user", "secret", APP, types=types)


def test_event_stream_decode_counts_filtered_frames(caplog: pytest.LogCaptureFixture) -> None:
    stream = _stream(frozenset({"StasisStart"}))
    good = json.dumps(SAMPLES[0][0])

    with caplog.at_level(logging.WARNING, logger="ari_app.ari.events"):
        decoded = stream._decode(good)
        assert stream._decode(json.dumps(event_json("Dial", dialstatus=7))) is None
        assert stream._decode('{"application": "botbridge"}') is None
        assert stream._decode("[1]") is None
        assert stream.ignored == 3
        assert caplog.text == ""
        assert stream._decode("{not json") is None
        assert stream._decode(json.dumps(_without(SAMPLES[0][0], "channel"))) is None

    assert decoded is not None and decoded.channel_id == CALLER_ID
    assert stream.ignored == 3
    assert "not JSON" in caplog.text
    assert "Skipping malformed ARI event: invalid ARI StasisStart event" in caplog.text


def test_event_stream_decode_without_filter() -> None:
    stream = _stream(None)

    assert stream._decode(json.dumps(event_json("PlaybackStarted"))) is None
    assert stream._decode(json.dumps(SAMPLES[9][0])) is not None
    assert stream.ignored == 0
