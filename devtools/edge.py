"""The Kamailio edge: render its per-deployment files from ``[edge]`` and run it.

``kamailio/kamailio.cfg`` is the same on every host. What differs (listen addresses, the node
list, the carrier allow-list, limits, file paths) goes into four small files next to a copy
of it: ``botbridge-edge.cfg`` (``#!define``s and ``listen`` lines, included by
kamailio.cfg), ``dispatcher.list``, ``address.list`` and ``tls.cfg``.

``python -m devtools.edge render DIR`` writes them for the configuration in effect
(BOTBRIDGE_CONFIG, environment), e.g. on a production edge host. ``KamailioEdge`` runs a
rendered edge in the foreground for ``make cluster-up`` and the cluster tests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.config import load_config
from devtools import prerequisites
from devtools.certs import ensure_dev_certs
from devtools.edge_config import EdgeSettings, load_edge

KAMAILIO_CFG = Path(__file__).resolve().parent.parent / "kamailio" / "kamailio.cfg"
DISPATCHER_SET = 1
CARRIER_GROUP = 1
EDGE_START_TIMEOUT_SECONDS = 20
EDGE_STOP_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.2
KAMCMD_TIMEOUT_SECONDS = 5


class EdgeError(RuntimeError):
    """Kamailio is missing, refused its configuration or did not come up."""


def kamailio_binary() -> str:
    try:
        return prerequisites.TOOLS["kamailio"].require()
    except prerequisites.MissingTool as exc:
        raise EdgeError(str(exc)) from exc


@dataclass(frozen=True)
class TlsPair:
    cert: Path
    key: Path


def render_edge(
    edge: EdgeSettings, directory: Path, *, tls: TlsPair, nodes: Sequence[str] | None = None
) -> Path:
    """Write kamailio.cfg and its per-deployment files into ``directory``; the cfg's path.

    ``nodes`` overrides ``edge.nodes`` (the cluster tools know their nodes' ports)."""
    directory.mkdir(parents=True, exist_ok=True)
    node_list = tuple(nodes if nodes is not None else edge.nodes)
    if not node_list:
        raise EdgeError("[edge] nodes is empty: name each node's SIP address:port")
    shutil.copy(KAMAILIO_CFG, directory / "kamailio.cfg")
    (directory / "dispatcher.list").write_text(dispatcher_list(node_list))
    (directory / "address.list").write_text(address_list(edge.carrier_match))
    (directory / "tls.cfg").write_text(tls_config(tls))
    (directory / "botbridge-edge.cfg").write_text(local_defines(edge, directory))
    return directory / "kamailio.cfg"


def dispatcher_list(nodes: Sequence[str]) -> str:
    lines = ["# set destination (node SIP address); written from [edge] nodes"]
    lines += [f"{DISPATCHER_SET} sip:{node}" for node in nodes]
    return "\n".join(lines) + "\n"


def address_list(carriers: Sequence[str]) -> str:
    lines = ["# group address netmask port: the carrier allow-list ([edge] carrier_match)"]
    for entry in carriers:
        network = ipaddress.ip_network(entry, strict=False)
        lines.append(f"{CARRIER_GROUP} {network.network_address} {network.prefixlen} 0")
    return "\n".join(lines) + "\n"


def tls_config(tls: TlsPair) -> str:
    return (
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {tls.cert}\n"
        f"private_key = {tls.key}\n"
        "\n[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
    )


def local_defines(edge: EdgeSettings, directory: Path) -> str:
    host = f"[{edge.host}]" if ":" in edge.host else edge.host
    defines = {
        "BB_DISPATCHER_LIST": f'"{directory / "dispatcher.list"}"',
        "BB_ADDRESS_LIST": f'"{directory / "address.list"}"',
        "BB_TLS_CONFIG": f'"{directory / "tls.cfg"}"',
        "BB_CTL_SOCKET": f'"unix:{ctl_socket(directory)}"',
        "BB_PROBE_INTERVAL_SECONDS": str(edge.probe_interval_seconds),
        "BB_PROBE_FAILURES": str(edge.probe_failures),
        "BB_PROBE_SUCCESSES": str(edge.probe_successes),
        "BB_TRANSACTION_TIMEOUT_MS": str(edge.transaction_timeout_ms),
        "BB_RING_TIMEOUT_MS": str(edge.ring_timeout_seconds * 1000),
        "BB_RATE_WINDOW_SECONDS": str(edge.rate_window_seconds),
        "BB_RATE_MAX_REQUESTS": str(edge.rate_max_requests),
        "BB_RATE_BLOCK_SECONDS": str(edge.rate_block_seconds),
        "BB_UDP_CHILDREN": str(edge.udp_children),
        "BB_TCP_CHILDREN": str(edge.tcp_children),
    }
    lines = ["# written from the [edge] section of the bridge configuration; do not edit"]
    lines += [f"#!define {name} {value}" for name, value in defines.items()]
    lines += [
        f"listen=udp:{host}:{edge.port}",
        f"listen=tcp:{host}:{edge.port}",
        f"listen=tls:{host}:{edge.tls_port}",
    ]
    return "\n".join(lines) + "\n"


def ctl_socket(directory: Path) -> Path:
    return directory / "kamailio_ctl"


@dataclass
class KamailioEdge:
    """One Kamailio process running a rendered edge directory."""

    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "kamailio.log"

    @property
    def cfg(self) -> Path:
        return self.directory / "kamailio.cfg"

    def check(self) -> None:
        out = subprocess.run(
            [kamailio_binary(), "-c", "-f", str(self.cfg)],
            capture_output=True,
            text=True,
            cwd=self.directory,
            check=False,
            timeout=EDGE_START_TIMEOUT_SECONDS,
        )
        if out.returncode != 0:
            raise EdgeError(f"kamailio refused {self.cfg}:\n{(out.stdout + out.stderr)[-3000:]}")

    def start(self, *, detach: bool = False) -> None:
        self.check()
        argv = [
            kamailio_binary(),
            "-f",
            str(self.cfg),
            "-DD",  # foreground: its children stop with it
            "-E",
            "-P",
            str(self.directory / "kamailio.pid"),
            "-Y",
            str(self.directory),
        ]
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the file
            self.proc = subprocess.Popen(
                argv,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # one process group: stopped as a whole
            )
        deadline = time.monotonic() + EDGE_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EdgeError(
                    f"kamailio exited ({self.proc.returncode}); see {self.log_path}:\n"
                    + self.log_text()[-2000:]
                )
            if ctl_socket(self.directory).exists() and self.rpc("core.uptime").returncode == 0:
                return
            time.sleep(POLL_SECONDS)
        self.stop()
        raise EdgeError(f"kamailio not up in {EDGE_START_TIMEOUT_SECONDS}s; see {self.log_path}")

    def rpc(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kamcmd", "-s", f"unix:{ctl_socket(self.directory)}", *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=KAMCMD_TIMEOUT_SECONDS,
        )

    def node_states(self) -> dict[str, str]:
        """Dispatcher's view: node URI -> flags (AP active+probing, IP inactive+probing...)."""
        return parse_dispatcher_list(self.rpc("dispatcher.list").stdout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc.pid, self.proc)
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop_process_group(pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM to the group Kamailio leads (it started it), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + EDGE_STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not _alive(pid):
            break
        time.sleep(POLL_SECONDS)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=EDGE_STOP_TIMEOUT_SECONDS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def parse_dispatcher_list(text: str) -> dict[str, str]:
    """``kamcmd dispatcher.list`` output -> {URI: FLAGS}."""
    states: dict[str, str] = {}
    uri = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("URI:"):
            uri = line.split(":", 1)[1].strip()
        elif line.startswith("FLAGS:") and uri:
            states[uri] = line.split(":", 1)[1].strip()
            uri = ""
    return states


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if len(args) != 2 or args[0] != "render":
        print("usage: python -m devtools.edge render DIRECTORY", file=sys.stderr)
        return 2
    config = load_config()
    directory = Path(args[1]).resolve()
    certs, _ = ensure_dev_certs(config.state_path("tls"))
    cert = config.state_path(config.sip.tls_cert_file)
    key = config.state_path(config.sip.tls_key_file)
    pair = TlsPair(cert, key) if cert.exists() else TlsPair(certs.server_cert, certs.server_key)
    try:
        cfg = render_edge(load_edge(), directory, tls=pair)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {cfg} and its lists; check it with: kamailio -c -f {cfg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
