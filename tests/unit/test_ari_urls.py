"""Pure URL and query-string building for the ARI REST client and event socket."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from ari_app.ari import events_url, path_for
from ari_app.ari.rest import ParamValue, encode_params


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (
            "http://127.0.0.1:8088/ari",
            "ws://127.0.0.1:8088/ari/events?app=botbridge&subscribeAll=false",
        ),
        (
            "https://pbx.example.com:8089/ari/",
            "wss://pbx.example.com:8089/ari/events?app=botbridge&subscribeAll=false",
        ),
        (
            "http://[::1]:8088/asterisk/ari",
            "ws://[::1]:8088/asterisk/ari/events?app=botbridge&subscribeAll=false",
        ),
    ],
)
def test_events_url_from_rest_base(base_url: str, expected: str) -> None:
    assert events_url(base_url, "botbridge") == expected


def test_events_url_encodes_app_name_and_subscribe_all() -> None:
    url = events_url("http://127.0.0.1:8088/ari", "bot bridge&x", subscribe_all=True)

    assert parse_qs(urlsplit(url).query) == {"app": ["bot bridge&x"], "subscribeAll": ["true"]}


def test_events_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError):
        events_url("ftp://127.0.0.1/ari", "botbridge")


def test_path_for_percent_encodes_each_segment() -> None:
    assert path_for("channels", "1741947667.12", "answer") == "/channels/1741947667.12/answer"
    assert path_for("bridges", "a/b?c#d e") == "/bridges/a%2Fb%3Fc%23d%20e"


def test_encode_params_drops_none_and_spells_booleans_like_ari() -> None:
    params: dict[str, ParamValue] = {
        "endpoint": "PJSIP/bot",
        "timeout": 30,
        "mute": False,
        "absorbDTMF": True,
        "x": None,
    }

    assert encode_params(params) == {
        "endpoint": "PJSIP/bot",
        "timeout": "30",
        "mute": "false",
        "absorbDTMF": "true",
    }
    assert encode_params(None) == {}
