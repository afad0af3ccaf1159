"""Where `make cluster-up` puts the edge and the nodes: fixed defaults (the addresses of
`make up`, each node on an address of its own), each one overridable by an environment or
make variable ``BOTBRIDGE_CLUSTER_<FIELD>`` (docs/scaling.md, "On one machine").

Declared as the app's settings are (ari_app/config/values.py): one frozen struct, each
field with its type, limits and default; msgspec converts the variables' text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import msgspec

from ari_app.config import ConfigError
from ari_app.config.values import IP_ADDRESS, SIP_URI, Port, Section, describe, invalid

ENV_PREFIX = "BOTBRIDGE_CLUSTER_"
NodeHosts = Annotated[tuple[Annotated[str, IP_ADDRESS], ...], msgspec.Meta(min_length=1)]


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


class ClusterAddresses(Section, frozen=True, rename=env_name):
    """The addresses of a cluster on one machine; each field read from its variable."""

    edge_port: Port = 5060  # carriers call the edge on 127.0.0.1: UDP/TCP here, TLS below
    edge_tls_port: Port = 5061
    node_hosts: NodeHosts = ("127.0.0.11", "127.0.0.12")  # one node per address
    # each node's listeners, the same ports on each node's own address
    sip_port: Port = 5060
    tls_port: Port = 5061
    ari_port: Port = 8088
    http_port: Port = 8090
    rtp_start: Port = 10000  # RTP/RTCP ports of each node: rtp_start..rtp_end
    rtp_end: Port = 10999
    bot_uri: Annotated[str, SIP_URI] = "sip:voicebot@127.0.0.1:5080"  # both nodes dial it
    agent_contact: Annotated[str, SIP_URI] = "sip:agent1@127.0.0.1:5090"

    def _validate(self) -> None:
        if self.rtp_end <= self.rtp_start:
            raise invalid(env_name("rtp_end"), f"must be above {env_name('rtp_start')}")

    def node_ports(self) -> tuple[int, ...]:
        return (self.sip_port, self.tls_port, self.ari_port, self.http_port)


def addresses_from_env(env: Mapping[str, str] | None = None) -> ClusterAddresses:
    """The defaults with every ``BOTBRIDGE_CLUSTER_*`` variable set in ``env`` applied
    (``..._NODE_HOSTS``: comma-separated); ConfigError naming the variable on a bad value or
    an unknown variable."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {
        name: value.strip()
        for name, value in env.items()
        if name.startswith(ENV_PREFIX) and value.strip()
    }
    hosts = raw.get(env_name("node_hosts"))
    if isinstance(hosts, str):
        raw[env_name("node_hosts")] = [part.strip() for part in hosts.split(",") if part.strip()]
    try:
        return msgspec.convert(raw, ClusterAddresses, strict=False)  # text to numbers
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid cluster address: {describe(exc)}") from exc
