"""User-to-User as contact-centre platforms send it, decoded with the shipped defaults.

One case per format (docs/context-codec.md, "Interoperability", names each source). Every
case carries the same bot context, ``escalate_to=billing;reason=card lost``, and must yield
it through the codec and route the caller to the billing queue through ``decide_transfer``
with the built-in configuration (no discriminator setting).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from ari_app.calls.transfer import decide_transfer
from ari_app.config import load_config
from ari_app.sip.uui import (
    ContextControlChars,
    ContextError,
    ContextMalformed,
    ContextNotUtf8,
    decode_uui_context,
    parse_uui,
)

CONFIG = load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x"})
DEFAULT = CONFIG.profiles["default"]
TEXT = "escalate_to=billing&reason=card lost"
PAIRS = (("escalate_to", "billing"), ("reason", "card lost"))
HEX = TEXT.encode().hex()
HEX_UPPER = HEX.upper()
# Avaya UCID item of shared UUI as the AudioCodes manual shows it (tag FA, 8 octets)
UCID_ITEM = "FA080019001038F725B3"
# a user-data item of shared UUI holding the context (tag, length, value)
USER_ITEM = f"C8{len(TEXT):02X}{HEX_UPPER}"

VARIANTS = [
    # RFC 7433 / RFC 7434
    pytest.param(f"{HEX};encoding=hex", id="rfc7433-lower-hex"),
    pytest.param(f"{HEX_UPPER};encoding=hex", id="rfc7433-upper-hex"),
    pytest.param(f"{HEX_UPPER};ENCODING=HEX", id="rfc7433-upper-parameter"),
    pytest.param(f"{HEX};encoding=hex;purpose=isdn-uui;content=isdn-uui", id="rfc7434-isdn-uui"),
    # without the encoding parameter
    pytest.param(HEX, id="hex-without-encoding"),
    pytest.param(HEX_UPPER, id="upper-hex-without-encoding"),
    pytest.param(quote(TEXT, safe="=&"), id="percent-free-text-without-encoding"),
    pytest.param(f'"{TEXT}"', id="quoted-text-without-encoding"),
    # Avaya: protocol discriminator 04 (IA5 text) or 00, and shared UUI (00 + items)
    pytest.param(f"04{HEX_UPPER};encoding=hex", id="avaya-pd-04"),
    pytest.param(f"00{HEX_UPPER};encoding=hex", id="avaya-pd-00"),
    pytest.param(f"04{HEX_UPPER}", id="avaya-pd-04-without-encoding"),
    pytest.param(f"00{USER_ITEM}{UCID_ITEM};encoding=hex", id="avaya-shared-uui"),
    pytest.param(f"00{UCID_ITEM}{USER_ITEM};encoding=hex", id="avaya-shared-uui-ucid-first"),
    pytest.param(f"00{UCID_ITEM}{USER_ITEM}", id="avaya-shared-uui-without-encoding"),
    # Genesys Cloud: discriminator first, or in a pd parameter; x-User-to-User ascii
    pytest.param(
        f"04{HEX};encoding=hex;purpose=isdn-uui;content=isdn-uui", id="genesys-pd-first-octet"
    ),
    pytest.param(
        f"{HEX};pd=04;encoding=hex;purpose=isdn-uui;content=isdn-uui", id="genesys-pd-parameter"
    ),
    pytest.param(f"{TEXT};encoding=ascii", id="genesys-audiocodes-ascii"),
    pytest.param(f'"{TEXT}";encoding=ascii', id="genesys-audiocodes-quoted-ascii"),
    pytest.param(f"{TEXT};encoding=hex", id="text-labelled-hex"),
    # AudioCodes gateways: Q.931 discriminator 08
    pytest.param(f"08{HEX};encoding=hex", id="audiocodes-pd-08"),
    # Cisco CVP / CUBE: the text as hex digits, no discriminator, RFC 7434 parameters
    pytest.param(f"{HEX_UPPER};encoding=hex;purpose=isdn-uui", id="cisco-hex-isdn-uui"),
    pytest.param(f"{HEX_UPPER};purpose=isdn-uui;content=isdn-uui", id="cisco-hex-no-encoding"),
]


@pytest.mark.parametrize("value", VARIANTS)
def test_the_codec_decodes_each_variant(value: str) -> None:
    context = decode_uui_context(parse_uui(value))
    assert context.pairs == PAIRS


@pytest.mark.parametrize("value", VARIANTS)
def test_each_variant_routes_from_the_refer_header(value: str) -> None:
    decision = decide_transfer(CONFIG, DEFAULT, None, {"User-to-User": value})
    assert (decision.queue, decision.escalate_to, decision.error) == (
        "billing-queue",
        "billing",
        None,
    )


@pytest.mark.parametrize("value", VARIANTS)
def test_each_variant_routes_from_x_user_to_user(value: str) -> None:
    decision = decide_transfer(CONFIG, DEFAULT, None, {"x-User-to-User": value})
    assert (decision.queue, decision.escalate_to) == ("billing-queue", "billing")


def test_genesys_refer_to_form() -> None:
    # Genesys Cloud's REFER form: the discriminator in the data, ";encoding=hex" escaped
    refer_to = f"<sip:agents@127.0.0.1?User-to-User=04{HEX}%3Bencoding%3Dhex>"
    decision = decide_transfer(CONFIG, DEFAULT, refer_to, {})
    assert (decision.queue, decision.escalate_to, decision.error) == (
        "billing-queue",
        "billing",
        None,
    )
    assert decision.context is not None and decision.context.pairs == PAIRS


@pytest.mark.parametrize(
    ("value", "error"),
    [
        # shared UUI with the UCID alone: no context to find
        pytest.param(f"00{UCID_ITEM};encoding=hex", ContextNotUtf8, id="ucid-only"),
        # items that do not fill the data exactly are not shared UUI
        pytest.param(f"00C8FF{HEX};encoding=hex", ContextNotUtf8, id="bad-item-length"),
        # labelled hex, neither hex nor a context
        pytest.param("6g;encoding=hex", ContextMalformed, id="not-hex"),
        pytest.param(f"{HEX};encoding=base64", ContextMalformed, id="unknown-encoding"),
        # a second discriminator is not stripped: only one octet of framing
        pytest.param(f"0404{HEX};encoding=hex", ContextControlChars, id="two-discriminators"),
    ],
)
def test_what_stays_refused(value: str, error: type[ContextError]) -> None:
    with pytest.raises(error):
        decode_uui_context(parse_uui(value))


def test_a_refused_variant_falls_back_to_the_default_queue() -> None:
    decision = decide_transfer(
        CONFIG, DEFAULT, None, {"User-to-User": f"00{UCID_ITEM};encoding=hex"}
    )
    assert decision.queue == DEFAULT.default_queue
    assert decision.error == "context_not_utf8"
