"""The bot's REFER as Asterisk hands it over: its Refer-To, User-to-User and copied headers.

Core transfer mode puts the REFER's data into the transfer channel's ``TRANSFER_DATA`` hash;
:func:`read_refer` reads what the decision needs (ari_app/calls/transfer.py) in one round
trip where it can.
"""

from __future__ import annotations

from ari_app.calls.control import CallControl
from ari_app.calls.transfer import REFER_UUI_HEADERS

__all__ = ["read_refer"]

# Separates the values of one EVAL() read of the REFER's data. A bot can put any byte in
# its Refer-To, this one included: a read that does not split into the expected number of
# parts is redone one variable at a time.
_EVAL_SEPARATOR = "\x1e"
_REFER_FIELDS = (
    "HASH(TRANSFER_DATA,Refer-To)",
    "HASHKEYS(TRANSFER_DATA)",
    *(f"HASH(TRANSFER_DATA,{h})" for h in REFER_UUI_HEADERS),
)


async def read_refer(
    ari: CallControl, channel_id: str, copied: tuple[str, ...] = ()
) -> tuple[str | None, dict[str, str]]:
    """The REFER's Refer-To, its User-to-User headers and the headers named in ``copied``
    (a profile's bot_headers), in one round trip."""
    wanted = (*REFER_UUI_HEADERS, *copied)
    fields = (*_REFER_FIELDS, *(f"HASH(TRANSFER_DATA,{h})" for h in copied))
    expression = _EVAL_SEPARATOR.join(f"${{{name}}}" for name in fields)
    joined = await ari.get_var(channel_id, f"EVAL({expression})")
    parts = joined.split(_EVAL_SEPARATOR) if joined is not None else []
    if len(parts) != len(fields):
        parts = [await ari.get_var(channel_id, name) or "" for name in fields]
    refer_to, keys, *values = parts
    read = dict(zip(wanted, values, strict=True))
    lowered = {h.lower() for h in wanted}
    headers: dict[str, str] = {}
    for key in (k.strip() for k in keys.split(",")):
        if key.lower() not in lowered:
            continue
        value = read.get(key)
        if value is None:  # the bot wrote the header name in another case
            value = await ari.get_var(channel_id, f"HASH(TRANSFER_DATA,{key})")
        if value:
            headers[key] = value
    return refer_to or None, headers
