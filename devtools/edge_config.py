"""``[edge]``: the Kamailio edge in front of several nodes (docs/scaling.md).

The app never reads it (it skips the table); the dev tooling does: ``devtools.edge`` renders
``kamailio/botbridge-edge.cfg`` and the edge's lists from it, ``make cluster-up`` runs it.
It lives in the same TOML file as the app's settings (BOTBRIDGE_CONFIG), and is declared
the same way: one frozen struct, each field with its type, limits and default.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from msgspec import Meta

from ari_app.config import ConfigError
from ari_app.config.values import Port, Rule, Section, convert, matches

Seconds = Annotated[int, Meta(ge=1, le=3600)]
Children = Annotated[int, Meta(ge=1, le=256)]
NODE = matches(r"[0-9.]+:[0-9]{1,5}|\[[0-9a-fA-F:]+\]:[0-9]{1,5}", "must be address:port")


def _address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an address or CIDR"
    return None


class EdgeSettings(Section, frozen=True):
    """``[edge]``: addresses, the node list and the edge's limits."""

    host: Annotated[str, Rule(_address)] = "127.0.0.1"  # UDP/TCP on port, TLS on tls_port
    port: Port = 5060
    tls_port: Port = 5061
    # addresses or CIDRs allowed to send calls in (TOML: one comma-separated string)
    carrier_match: tuple[Annotated[str, Rule(_network)], ...] = ("127.0.0.1",)
    nodes: tuple[Annotated[str, NODE], ...] = ()  # each node's SIP (UDP) "address:port"
    probe_interval_seconds: Seconds = 1
    probe_failures: Annotated[int, Meta(ge=1, le=100)] = 1
    probe_successes: Annotated[int, Meta(ge=1, le=100)] = 1
    transaction_timeout_ms: Annotated[int, Meta(ge=100, le=60000)] = 2000
    ring_timeout_seconds: Seconds = 120
    rate_window_seconds: Seconds = 2
    rate_max_requests: Annotated[int, Meta(ge=1, le=1_000_000)] = 400
    rate_block_seconds: Seconds = 4
    udp_children: Children = 4
    tcp_children: Children = 4


def load_edge(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> EdgeSettings:
    """The ``[edge]`` table of the TOML file (argument or BOTBRIDGE_CONFIG), over the defaults;
    ConfigError naming the key on a bad value."""
    env = os.environ if env is None else env
    file_path = path or env.get("BOTBRIDGE_CONFIG")
    raw: dict[str, Any] = {}
    if file_path:
        try:
            raw = dict(tomllib.loads(Path(file_path).read_text()).get("edge", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc}") from exc
    if isinstance(raw.get("carrier_match"), str):
        raw["carrier_match"] = split_list(raw["carrier_match"])
    return convert(raw, EdgeSettings, where="edge.")


def split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
