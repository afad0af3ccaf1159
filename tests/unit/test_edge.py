"""The edge's per-deployment files, rendered from [edge] (pure; Kamailio itself runs in
tests/integration/test_cluster.py, which also has it check the rendered configuration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from msgspec.structs import replace

from ari_app.config import ConfigError
from devtools.edge import (
    EdgeError,
    TlsPair,
    address_list,
    dispatcher_list,
    parse_dispatcher_list,
    render_edge,
)
from devtools.edge_config import load_edge


def test_defaults_load_and_name_every_limit() -> None:
    edge = load_edge(env={})
    assert (edge.host, edge.port, edge.tls_port) == ("127.0.0.1", 5060, 5061)
    assert edge.nodes == ()
    assert edge.rate_max_requests > 0 and edge.transaction_timeout_ms > 0


def test_bad_edge_values_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[edge]\ncarrier_match = "10.0.0.0/8, not-an-address"\n')
    with pytest.raises(ConfigError, match="carrier_match"):
        load_edge(path, env={})
    path.write_text('[edge]\nnodes = ["10.0.0.1"]\n')
    with pytest.raises(ConfigError, match="nodes"):
        load_edge(path, env={})


def test_lists() -> None:
    assert dispatcher_list(["10.0.0.11:5060", "10.0.0.12:5070"]).splitlines()[1:] == [
        "1 sip:10.0.0.11:5060",
        "1 sip:10.0.0.12:5070",
    ]
    assert address_list(["203.0.113.7", "198.51.100.0/24"]).splitlines()[1:] == [
        "1 203.0.113.7 32 0",
        "1 198.51.100.0 24 0",
    ]


def test_render_writes_the_defines_kamailio_cfg_uses(tmp_path: Path) -> None:
    edge = load_edge(env={})
    edge = replace(edge, nodes=("10.0.0.11:5060",), port=5070)
    pair = TlsPair(tmp_path / "s.crt", tmp_path / "s.key")
    cfg = render_edge(edge, tmp_path / "edge", tls=pair)
    local = (tmp_path / "edge" / "botbridge-edge.cfg").read_text()
    used = {
        word
        for word in cfg.read_text().replace("(", " ").replace(")", " ").replace(",", " ").split()
        if word.startswith("BB_")
    }
    defined = {line.split()[1] for line in local.splitlines() if line.startswith("#!define")}
    assert used and used <= defined
    assert "listen=udp:127.0.0.1:5070" in local and "listen=tls:127.0.0.1:5061" in local
    assert f"certificate = {pair.cert}" in (tmp_path / "edge" / "tls.cfg").read_text()
    with pytest.raises(EdgeError, match="nodes"):
        render_edge(replace(edge, nodes=()), tmp_path / "empty", tls=pair)


def test_parse_dispatcher_list() -> None:
    text = """{
	NRSETS: 1
	RECORDS: {
		SET: {
			ID: 1
			TARGETS: {
				DEST: {
					URI: sip:127.0.11.1:5060
					FLAGS: AP
					PRIORITY: 0
				}
				DEST: {
					URI: sip:127.0.11.2:5060
					FLAGS: IP
					PRIORITY: 0
				}
			}
		}
	}
}"""
    assert parse_dispatcher_list(text) == {
        "sip:127.0.11.1:5060": "AP",
        "sip:127.0.11.2:5060": "IP",
    }
