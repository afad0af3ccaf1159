"""Where `make cluster-up` puts the edge and the nodes: fixed defaults (the addresses of
`make up`, each node on an address of its own), each one overridable by an environment or
make variable (docs/scaling.md, "On one machine").
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from devtools.stack import StackError

PORT_MIN, PORT_MAX = 1, 65535


@dataclass(frozen=True)
class ClusterAddresses:
    """The addresses of a cluster on one machine. Each field is read from the variable
    ``BOTBRIDGE_CLUSTER_<FIELD>`` (upper case) when it is set."""

    edge_port: int = 5060  # carriers call the edge on 127.0.0.1: UDP/TCP here, TLS below
    edge_tls_port: int = 5061
    node_hosts: tuple[str, ...] = ("127.0.0.11", "127.0.0.12")  # one node per address
    # each node's listeners, the same ports on each node's own address
    sip_port: int = 5060
    tls_port: int = 5061
    ari_port: int = 8088
    http_port: int = 8090
    rtp_start: int = 10000  # RTP/RTCP ports of each node: rtp_start..rtp_end
    rtp_end: int = 10999
    bot_uri: str = "sip:voicebot@127.0.0.1:5080"  # the bot both nodes dial
    agent_contact: str = "sip:agent1@127.0.0.1:5090"

    def node_ports(self) -> tuple[int, ...]:
        return (self.sip_port, self.tls_port, self.ari_port, self.http_port)


ENV_PREFIX = "BOTBRIDGE_CLUSTER_"


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def addresses_from_env(env: Mapping[str, str] | None = None) -> ClusterAddresses:
    """The defaults with every ``BOTBRIDGE_CLUSTER_*`` variable set in ``env`` applied;
    StackError naming the variable on a bad value (node_hosts: comma-separated)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for spec in fields(ClusterAddresses):
        raw = env.get(env_name(spec.name), "").strip()
        if raw:
            values[spec.name] = _parse(spec.name, raw)
    addresses = replace(ClusterAddresses(), **values)
    if addresses.rtp_end <= addresses.rtp_start:
        raise StackError(f"{env_name('rtp_end')} must be above {env_name('rtp_start')}")
    return addresses


def _parse(name: str, raw: str) -> object:
    default = getattr(ClusterAddresses(), name)
    try:
        if isinstance(default, int):
            port = int(raw)
            if not PORT_MIN <= port <= PORT_MAX:
                raise ValueError(f"not a port ({PORT_MIN}..{PORT_MAX})")
            return port
        if isinstance(default, tuple):
            hosts = tuple(part.strip() for part in raw.split(",") if part.strip())
            for host in hosts:
                ipaddress.IPv4Address(host)
            if not hosts:
                raise ValueError("no address")
            return hosts
        if not raw.startswith("sip:"):
            raise ValueError("not a sip: URI")
        return raw
    except ValueError as exc:
        raise StackError(f"{env_name(name)}={raw!r}: {exc}") from exc
