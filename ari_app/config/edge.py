"""Configuration section ``[edge]``: the Kamailio edge in front of several nodes.

The app itself never reads it; it is here so that every limit of a deployment lives in one
validated file. ``devtools.edge`` renders ``kamailio/botbridge-edge.cfg`` and the edge's
lists from it (docs/scaling.md).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates

_HOST = validate.Regexp(r"^[0-9a-fA-F.:]+$", error="must be an IP address")
_NODE = validate.Regexp(
    r"^[0-9.]+:[0-9]{1,5}$|^\[[0-9a-fA-F:]+\]:[0-9]{1,5}$", error="must be address:port"
)


@dataclass(frozen=True)
class EdgeSettings:
    """``[edge]``: addresses, the node list and the edge's limits."""

    host: str  # carrier-facing address (UDP/TCP on port, TLS on tls_port)
    port: int
    tls_port: int
    carrier_match: tuple[str, ...]  # addresses or CIDRs allowed to send calls in
    nodes: tuple[str, ...]  # "address:port" of each node's SIP (UDP) listener
    probe_interval_seconds: int
    probe_failures: int
    probe_successes: int
    transaction_timeout_ms: int
    ring_timeout_seconds: int
    rate_window_seconds: int
    rate_max_requests: int
    rate_block_seconds: int
    udp_children: int
    tcp_children: int


class EdgeSchema(Schema):
    host = fields.Str(required=True, validate=_HOST)
    port = fields.Int(required=True, validate=validate.Range(1, 65535))
    tls_port = fields.Int(required=True, validate=validate.Range(1, 65535))
    carrier_match = fields.Str(required=True)
    nodes = fields.List(fields.Str(validate=_NODE), load_default=list)
    probe_interval_seconds = fields.Int(required=True, validate=validate.Range(1, 3600))
    probe_failures = fields.Int(required=True, validate=validate.Range(1, 100))
    probe_successes = fields.Int(required=True, validate=validate.Range(1, 100))
    transaction_timeout_ms = fields.Int(required=True, validate=validate.Range(100, 60000))
    ring_timeout_seconds = fields.Int(required=True, validate=validate.Range(1, 3600))
    rate_window_seconds = fields.Int(required=True, validate=validate.Range(1, 3600))
    rate_max_requests = fields.Int(required=True, validate=validate.Range(1, 1_000_000))
    rate_block_seconds = fields.Int(required=True, validate=validate.Range(1, 3600))
    udp_children = fields.Int(required=True, validate=validate.Range(1, 256))
    tcp_children = fields.Int(required=True, validate=validate.Range(1, 256))

    @validates("host")
    def _host(self, value: str, **_: Any) -> None:
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValidationError(f"{value!r} is not an IP address") from exc

    @validates("carrier_match")
    def _carriers(self, value: str, **_: Any) -> None:
        for entry in split_list(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValidationError(f"{entry!r} is not an address or CIDR") from exc

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> EdgeSettings:
        data["carrier_match"] = tuple(split_list(data["carrier_match"]))
        data["nodes"] = tuple(data["nodes"])
        return EdgeSettings(**data)


def split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
