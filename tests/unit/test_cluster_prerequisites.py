"""`make cluster-up` checks every prerequisite before it starts anything (devtools/cluster)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ari_app.config import ConfigError
from devtools import cluster as cluster_module
from devtools import prerequisites
from devtools.cluster import CLUSTER_TOOLS, Cluster, ClusterNotReady, build_cluster
from devtools.cluster_addresses import ClusterAddresses, addresses_from_env
from devtools.edge import KamailioEdge
from devtools.postgres import PostgresServer
from devtools.runtime import Runtime, RuntimeUnavailable


class StubRuntime(Runtime):
    """A runtime that answers ``asterisk -V`` (or not) without running anything."""

    name = "stub"

    def __init__(self, root: Path, reason: str | None = None) -> None:
        self.root, self.reason = root, reason

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def scratch_root(self) -> Path:
        return self.root

    def runtime_path(self, host_path: Path) -> str:
        return str(host_path)

    def asterisk_version(self) -> tuple[int, int, int]:
        if self.reason:
            raise RuntimeUnavailable(self.reason)
        return (22, 8, 0)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the cluster started: each part it starts records itself here."""
    parts: list[str] = []

    def record(name: str) -> object:
        def start(*args: object, **kwargs: object) -> None:
            parts.append(name)
            raise AssertionError(f"{name} started")

        return start

    monkeypatch.setattr(PostgresServer, "start", record("postgres"))
    monkeypatch.setattr(cluster_module, "build_stack", record("node"))
    monkeypatch.setattr(KamailioEdge, "start", record("edge"))
    return parts


@pytest.fixture
def every_tool_there(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLUSTER_TOOLS:
        tool = prerequisites.TOOLS[name]
        monkeypatch.setitem(prerequisites.TOOLS, name, dataclasses.replace(tool, locate=_there))


def _there() -> str:
    return "/usr/bin/there"


def _missing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = prerequisites.TOOLS[name]
    monkeypatch.setitem(prerequisites.TOOLS, name, dataclasses.replace(tool, locate=lambda: None))


def _cluster(tmp_path: Path, runtime: Runtime | None = None) -> Cluster:
    root = tmp_path / "cluster"
    return build_cluster(runtime or StubRuntime(tmp_path), root, free_ports=True)


@pytest.fixture
def taken(tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    """A cluster whose edge TLS port another process listens on."""
    built = _cluster(tmp_path)
    with socket.socket() as other:
        other.bind((built.edge_settings.host, built.edge_settings.tls_port))
        other.listen()
        yield built, built.edge_settings.tls_port


@pytest.mark.parametrize("name", CLUSTER_TOOLS)
def test_a_missing_tool_stops_the_cluster_before_anything_starts(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    started: list[str],
    every_tool_there: None,
) -> None:
    _missing(name, monkeypatch)
    built = _cluster(tmp_path)
    with pytest.raises(ClusterNotReady) as raised:
        built.start()
    message = str(raised.value)
    assert message.startswith("the cluster cannot start, nothing was started:\n- ")
    assert f"- {name} is missing" in message
    assert "install -y " + " ".join(prerequisites.TOOLS[name].packages) in message
    assert message.count("\n- ") == 1  # only what is missing
    assert started == []
    assert not built.root.exists()


def test_every_problem_is_listed_at_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    started: list[str],
    every_tool_there: None,
    taken: tuple[Cluster, int],
) -> None:
    built, port = taken
    built.runtime = StubRuntime(tmp_path, reason="rootfs runtime not built at /x")
    _missing("kamailio", monkeypatch)
    _missing("PostgreSQL server", monkeypatch)
    with pytest.raises(ClusterNotReady) as raised:
        built.start()
    problems = str(raised.value).split("\n- ")[1:]
    assert [p.split(" ", 1)[0] for p in problems] == [
        "kamailio",
        "PostgreSQL",
        "rootfs",
        f"{built.edge_settings.host}:{port}/tcp",
    ]
    assert "cannot be bound (Address already in use): is it in use?" in problems[-1]
    assert started == []


def test_with_every_prerequisite_the_parts_start(
    tmp_path: Path, started: list[str], every_tool_there: None
) -> None:
    built = _cluster(tmp_path)
    assert built.prerequisite_problems() == []
    with pytest.raises(AssertionError, match="postgres started"):
        built.start()
    assert started == ["postgres"]


def test_make_cluster_up_checks_the_fixed_ports_of_every_node(
    tmp_path: Path, started: list[str], every_tool_there: None
) -> None:
    hosts = ("127.0.77.1", "127.0.77.2")
    built = build_cluster(StubRuntime(tmp_path), tmp_path / "c", free_ports=False, node_hosts=hosts)
    with socket.socket() as other:
        other.bind((hosts[1], ClusterAddresses().ari_port))
        other.listen()
        with pytest.raises(ClusterNotReady) as raised:
            built.start()
    assert f"- {hosts[1]}:{ClusterAddresses().ari_port}/tcp cannot be bound" in str(raised.value)
    assert f"{hosts[0]}:{ClusterAddresses().ari_port}/tcp" not in str(raised.value)
    assert started == []


def test_make_cluster_up_takes_its_addresses_from_the_environment(
    tmp_path: Path, started: list[str], every_tool_there: None
) -> None:
    hosts = ("127.0.78.1", "127.0.78.2")
    addresses = addresses_from_env(
        {
            "BOTBRIDGE_CLUSTER_EDGE_PORT": "15060",
            "BOTBRIDGE_CLUSTER_EDGE_TLS_PORT": "15061",
            "BOTBRIDGE_CLUSTER_NODE_HOSTS": " 127.0.78.1, 127.0.78.2 ",
            "BOTBRIDGE_CLUSTER_ARI_PORT": "18088",
            "BOTBRIDGE_CLUSTER_RTP_START": "30000",
            "BOTBRIDGE_CLUSTER_RTP_END": "30999",
            "BOTBRIDGE_CLUSTER_BOT_URI": "sip:voicebot@127.0.0.1:15080",
            "OTHER": "ignored",
        }
    )
    assert addresses == ClusterAddresses(
        edge_port=15060,
        edge_tls_port=15061,
        node_hosts=hosts,
        ari_port=18088,
        rtp_start=30000,
        rtp_end=30999,
        bot_uri="sip:voicebot@127.0.0.1:15080",
    )
    built = build_cluster(
        StubRuntime(tmp_path), tmp_path / "c", free_ports=False, addresses=addresses
    )
    assert (built.edge_settings.port, built.edge_settings.tls_port) == (15060, 15061)
    assert tuple(built.node_hosts) == hosts
    with socket.socket() as other:
        other.bind((hosts[0], 18088))
        other.listen()
        with pytest.raises(ClusterNotReady) as raised:
            built.start()
    assert f"- {hosts[0]}:18088/tcp cannot be bound" in str(raised.value)
    assert started == []


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("BOTBRIDGE_CLUSTER_SIP_PORT", "70000", "Expected `int` <= 65535"),
        ("BOTBRIDGE_CLUSTER_HTTP_PORT", "http", "Expected `int`"),
        ("BOTBRIDGE_CLUSTER_NODE_HOSTS", "127.0.0.11,node-2", "Not a valid IP address"),
        ("BOTBRIDGE_CLUSTER_NODE_HOSTS", ",", "length >= 1"),
        ("BOTBRIDGE_CLUSTER_AGENT_CONTACT", "agent1@127.0.0.1", "must be sip:user@host[:port]"),
        ("BOTBRIDGE_CLUSTER_RTP_END", "9000", "must be above BOTBRIDGE_CLUSTER_RTP_START"),
        ("BOTBRIDGE_CLUSTER_SIP_PROT", "5070", "Unknown field"),
    ],
)
def test_a_bad_cluster_address_is_refused_naming_its_variable(
    name: str, value: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=name) as raised:
        addresses_from_env({name: value})
    assert why in str(raised.value)
