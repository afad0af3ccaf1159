"""`make cluster-up` checks every prerequisite before it starts anything (devtools/cluster)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from devtools import cluster as cluster_module
from devtools import prerequisites
from devtools.cluster import CLUSTER_TOOLS, Cluster, ClusterNotReady, build_cluster
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
        other.bind((hosts[1], cluster_module.FIXED_ARI_PORT))
        other.listen()
        with pytest.raises(ClusterNotReady) as raised:
            built.start()
    assert f"- {hosts[1]}:{cluster_module.FIXED_ARI_PORT}/tcp cannot be bound" in str(raised.value)
    assert f"{hosts[0]}:{cluster_module.FIXED_ARI_PORT}/tcp" not in str(raised.value)
    assert started == []
