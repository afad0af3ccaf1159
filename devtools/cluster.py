"""A cluster on one machine: the Kamailio edge, two bridge nodes and one PostgreSQL store.

``python -m devtools.cluster up|down|status|records`` backs ``make cluster-up``,
``cluster-down``, ``cluster-status`` and ``cluster-records``. The same ``Cluster`` class,
on free ports, is what tests/integration/test_cluster.py starts.

- the edge (kamailio/kamailio.cfg, rendered by devtools.edge) on 127.0.0.1:5060 (UDP, TCP)
  and 5061 (TLS): the carrier-facing address of ``make up``, so every SIPp party works
  unchanged;
- node-1 on 127.0.0.11 and node-2 on 127.0.0.12: each one Asterisk + app (a DevStack) with
  its own SIP, ARI and HTTP listeners on its own address, taking calls only from the edge,
  bots and agents (these addresses and ports: devtools/cluster_addresses.py, each one
  overridable by a ``BOTBRIDGE_CLUSTER_*`` variable);
- PostgreSQL from the distribution's packages (devtools.postgres), one database shared by
  both nodes;
- bots at sip:voicebot@127.0.0.1:5080 and the agent at sip:agent1@127.0.0.1:5090, as in the
  dev stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ari_app.config import ConfigError
from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools import prerequisites
from devtools.certs import ensure_dev_certs
from devtools.cluster_addresses import ClusterAddresses, addresses_from_env
from devtools.devstack import DevStack, build_stack, free_rtp_range, port_of, stop_node
from devtools.edge import EdgeError, KamailioEdge, TlsPair, render_edge, stop_process_group
from devtools.edge_config import EdgeSettings, load_edge
from devtools.postgres import PostgresServer, PostgresUnavailable
from devtools.runtime import Runtime, RuntimeUnavailable, select_runtime
from devtools.sipp import Sipp
from devtools.stack import StackError, free_port

EDGE_HOST = "127.0.0.1"
NODES_ACTIVE_TIMEOUT_SECONDS = 15
APP_EXIT_TIMEOUT_SECONDS = 10  # make cluster-down: apps exit before PostgreSQL stops
POLL_SECONDS = 0.2
RUN_INFO = "cluster.json"
ACTIVE = "AP"  # dispatcher flags of a node that answers its probes
SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "tests" / "scenarios"
# what the cluster runs besides the Asterisk runtime (devtools/prerequisites.py)
CLUSTER_TOOLS = ("kamailio", "kamailio TLS module", "PostgreSQL server")


class ClusterNotReady(StackError):
    """A prerequisite of the cluster is missing; nothing was started."""


Progress = Callable[[str], None]
# what of a node's environment cluster.json keeps, for `make cluster-restart`
NODE_ENV_PREFIX = "BOTBRIDGE_"


def node_env(node: DevStack) -> dict[str, str]:
    """What a node's app was started with (state directory, ARI password, store, addresses),
    for `make cluster-restart` to start its successor the same way."""
    return {k: v for k, v in node.env.items() if k.startswith(NODE_ENV_PREFIX)}


def _quiet(_: str) -> None:
    pass


@dataclass
class Cluster:
    """Everything of one cluster lives under ``root``; PostgreSQL under its own temp dir."""

    runtime: Runtime
    root: Path
    edge_settings: EdgeSettings
    node_hosts: Sequence[str]
    free_ports: bool
    extra_env: Mapping[str, str] = field(default_factory=dict)
    addresses: ClusterAddresses = field(default_factory=ClusterAddresses)  # without free_ports
    postgres: PostgresServer | None = None
    database_url: str = ""
    nodes: list[DevStack] = field(default_factory=list)
    edge: KamailioEdge | None = None
    bot_port: int = 0
    agent_port: int = 0

    # -- addresses ---------------------------------------------------------------------------

    @property
    def sip_remote(self) -> str:
        return f"{self.edge_settings.host}:{self.edge_settings.port}"

    @property
    def tls_remote(self) -> str:
        return f"{self.edge_settings.host}:{self.edge_settings.tls_port}"

    def node_uri(self, node: DevStack) -> str:
        return f"sip:{node.config.sip.host}:{node.config.sip.port}"

    def sipp(self) -> Sipp:
        return Sipp(self.runtime, SCENARIOS_DIR, self.root / "sipp")

    # -- life ----------------------------------------------------------------------------------

    def start(self, progress: Progress = _quiet, *, detach: bool = False) -> None:
        """Check every prerequisite, then start PostgreSQL, the nodes and the edge; on a
        failure midway, stop what started. ClusterNotReady before anything starts."""
        problems = self.prerequisite_problems()
        if problems:
            raise ClusterNotReady(
                "the cluster cannot start, nothing was started:\n- " + "\n- ".join(problems)
            )
        try:
            self._start(progress, detach)
        except BaseException:
            progress("a part did not come up: stopping what started")
            self.stop()
            raise

    def prerequisite_problems(self) -> list[str]:
        """Every missing tool, an unusable runtime and every address taken, each a sentence."""
        problems = [
            prerequisites.TOOLS[name].hint()
            for name in CLUSTER_TOOLS
            if prerequisites.TOOLS[name].locate() is None
        ]
        try:
            self.runtime.asterisk_version()
        except RuntimeUnavailable as exc:
            problems.append(str(exc))
        edge = self.edge_settings
        wanted = [(edge.host, edge.port, "udp"), (edge.host, edge.port, "tcp")]
        wanted.append((edge.host, edge.tls_port, "tcp"))
        if not self.free_ports:  # with free ports the nodes' ports are chosen as they start
            for host in self.node_hosts:
                wanted.append((host, self.addresses.sip_port, "udp"))
                wanted += [(host, port, "tcp") for port in self.addresses.node_ports()]
        problems += [problem for w in wanted if (problem := _unbindable(*w))]
        return problems

    def _start(self, progress: Progress, detach: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        progress("PostgreSQL: initdb and start (distribution packages)")
        self.postgres = PostgresServer.start()
        self.database_url = self.postgres.create_database()
        progress(f"PostgreSQL up: {self.postgres.admin_url.rsplit('@', 1)[-1]}")
        if self.free_ports:
            self.bot_port, self.agent_port = free_port(udp_too=True), free_port(udp_too=True)
            bot_uri = f"sip:voicebot@127.0.0.1:{self.bot_port}"
            agent_contact = f"sip:agent1@127.0.0.1:{self.agent_port}"
        else:
            bot_uri, agent_contact = self.addresses.bot_uri, self.addresses.agent_contact
            self.bot_port, self.agent_port = port_of(bot_uri), port_of(agent_contact)
        for index, host in enumerate(self.node_hosts, start=1):
            name = f"node-{index}"
            node = build_stack(
                self.runtime,
                self.root / name,
                free_ports=False,
                extra_env=self._node_env(name, host, bot_uri, agent_contact),
            )
            progress(f"{name}: Asterisk on {node.sip_remote}, ARI {node.config.ari.url}")
            node.instance.start(detach=detach)
            self.nodes.append(node)
            node.start_app(detach=detach)
            progress(
                f"{name}: app ready (store node {node.config.store.node!r}, reports "
                f"http://{node.config.http.host}:{node.config.http.port}/reports)"
            )
        certs, _ = ensure_dev_certs(self.root / "tls", names=("localhost", EDGE_HOST))
        edge_dir = self.root / "edge"
        render_edge(
            self.edge_settings,
            edge_dir,
            tls=TlsPair(certs.server_cert, certs.server_key),
            nodes=[f"{n.config.sip.host}:{n.config.sip.port}" for n in self.nodes],
        )
        self.edge = KamailioEdge(edge_dir)
        progress(
            f"edge: Kamailio on {self.sip_remote} (udp, tcp), TLS {self.tls_remote}; "
            f"config {edge_dir / 'kamailio.cfg'}"
        )
        self.edge.start()
        self.wait_nodes_active(progress)

    def _node_env(self, name: str, host: str, bot_uri: str, agent_contact: str) -> dict[str, str]:
        if self.free_ports:
            sip, tls = free_port(host, udp_too=True), free_port(host)
            ari, http = free_port(host), free_port(host)
            rtp = free_rtp_range()
            rtp_end = rtp + 3999
        else:
            sip, tls, ari, http = self.addresses.node_ports()
            rtp, rtp_end = self.addresses.rtp_start, self.addresses.rtp_end
        return {
            **self.extra_env,
            "BOTBRIDGE_STATE_DIR": str(self.root / name / "state"),
            "BOTBRIDGE_ARI_PASSWORD": uuid.uuid4().hex,
            "BOTBRIDGE_ARI_URL": f"http://{host}:{ari}/ari",
            "BOTBRIDGE_SIP_HOST": host,
            "BOTBRIDGE_SIP_PORT": str(sip),
            "BOTBRIDGE_SIP_TLS_PORT": str(tls),
            "BOTBRIDGE_RTP_START": str(rtp),
            "BOTBRIDGE_RTP_END": str(rtp_end),
            "BOTBRIDGE_HTTP_HOST": host,
            "BOTBRIDGE_HTTP_PORT": str(http),
            "BOTBRIDGE_BOT_URI": bot_uri,
            "BOTBRIDGE_AGENT_CONTACT": agent_contact,
            "BOTBRIDGE_DATABASE_URL": self.database_url,
            "BOTBRIDGE_STORE_NODE": name,
            # the node takes carrier calls only from the edge
            "BOTBRIDGE_CARRIER_MATCH": self.edge_settings.host,
        }

    def wait_nodes_active(self, progress: Progress = _quiet) -> None:
        assert self.edge is not None
        deadline = time.monotonic() + NODES_ACTIVE_TIMEOUT_SECONDS
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.edge.node_states()
            if len(states) == len(self.nodes) and all(
                flags.startswith(ACTIVE[0]) for flags in states.values()
            ):
                progress("edge: every node answers its probes: " + json.dumps(states))
                return
            time.sleep(POLL_SECONDS)
        raise EdgeError(
            f"the edge does not see every node active in {NODES_ACTIVE_TIMEOUT_SECONDS}s: "
            f"{states}; see {self.edge.log_path}"
        )

    def stop(self) -> None:
        if self.edge is not None:
            self.edge.stop()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        if self.postgres is not None:
            self.postgres.stop()

    # -- what the tests do to a node -------------------------------------------------------------

    def kill_node(self, node: DevStack) -> None:
        """SIGKILL Asterisk and the app of one node, as a crash of its host would."""
        if node.app_proc is not None and node.app_proc.poll() is None:
            node.app_proc.kill()
            node.app_proc.wait()
        node.instance.kill()

    def revive_node(self, node: DevStack) -> None:
        node.instance.start()
        node.start_app()

    # -- records -------------------------------------------------------------------------------

    def records(self) -> list[Record]:
        return all_records(self.database_url)


def _unbindable(host: str, port: int, proto: str) -> str | None:
    """None when ``host:port`` can be bound for ``proto``, else why not."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if proto == "tcp":  # as the servers do: a closed connection's TIME_WAIT is no owner
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return f"{host}:{port}/{proto} cannot be bound ({exc.strerror}): is it in use?"
    return None


def all_records(database_url: str) -> list[Record]:
    store = InteractionStore(database_url, migrate=False)
    try:
        return store.all()
    finally:
        store.close()


def build_cluster(
    runtime: Runtime,
    root: Path,
    *,
    free_ports: bool,
    addresses: ClusterAddresses | None = None,
    node_hosts: Sequence[str] | None = None,
    carrier_match: Sequence[str] = (EDGE_HOST,),
    extra_env: Mapping[str, str] | None = None,
    edge_overrides: Mapping[str, Any] | None = None,
) -> Cluster:
    """A cluster on free ports (tests) or on ``addresses`` (default: ClusterAddresses())."""
    addresses = addresses or ClusterAddresses()
    env = {**os.environ, **(extra_env or {})}
    edge = load_edge(env=env)
    changes: dict[str, Any] = {"host": EDGE_HOST, "carrier_match": tuple(carrier_match)}
    if free_ports:
        changes.update(port=free_port(EDGE_HOST, udp_too=True), tls_port=free_port(EDGE_HOST))
    else:
        changes.update(port=addresses.edge_port, tls_port=addresses.edge_tls_port)
    changes.update(edge_overrides or {})
    return Cluster(
        runtime,
        root,
        msgspec.structs.replace(edge, **changes),
        tuple(node_hosts or addresses.node_hosts),
        free_ports,
        extra_env=dict(extra_env or {}),
        addresses=addresses,
    )


# -- make cluster-up / cluster-down / cluster-status / cluster-records ---------------------------


def run_dir() -> Path:
    return Path(os.environ.get("BOTBRIDGE_RUN_DIR") or Path.cwd() / "var" / "run").resolve()


def cluster_root(runtime: Runtime) -> Path:
    digest = hashlib.sha256(str(run_dir()).encode()).hexdigest()[:12]
    return runtime.scratch_root() / f"cluster-{digest}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:]) or ["status"]
    commands = {"up": _up, "down": _down, "status": _status, "records": _records}
    if args[0] not in commands:
        print(f"usage: python -m devtools.cluster {'|'.join(commands)}", file=sys.stderr)
        return 2
    try:
        return commands[args[0]]()
    except (StackError, EdgeError, PostgresUnavailable, RuntimeUnavailable, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def print_progress(message: str) -> None:
    """A progress line of the cluster targets, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _up() -> int:
    info_path = run_dir() / RUN_INFO
    if info_path.exists() and _alive(json.loads(info_path.read_text())):
        print(f"already up; run directory {run_dir()} (make cluster-down first)")
        return 0
    addresses = addresses_from_env()  # a bad variable stops it before anything starts
    runtime = select_runtime()
    print_progress(f"runtime: {runtime.describe()}")
    cluster = build_cluster(runtime, cluster_root(runtime), free_ports=False, addresses=addresses)
    cluster.start(print_progress, detach=True)
    assert cluster.postgres is not None and cluster.edge is not None
    assert cluster.edge.proc is not None
    info = {
        "root": str(cluster.root),
        "runtime": runtime.name,
        "database_url": cluster.database_url,
        "postgres": {
            "admin_url": cluster.postgres.admin_url,
            # empty: a server of BOTBRIDGE_TEST_POSTGRES_URL, not ours to stop
            "data_dir": str(cluster.postgres.data_dir or ""),
            "bin_dir": str(cluster.postgres.bin_dir or ""),
        },
        "edge": {
            "pid": cluster.edge.proc.pid,
            "directory": str(cluster.edge.directory),
            "sip": cluster.sip_remote,
            "tls": cluster.tls_remote,
        },
        "nodes": [
            {
                "name": node.config.store.node,
                "sip": node.sip_remote,
                "ari": node.config.ari.url,
                "reports": f"http://{node.config.http.host}:{node.config.http.port}/reports",
                "app_pid": node.app_proc.pid if node.app_proc else None,
                "asterisk_pid": node.instance.pid,
                "conf": node.instance.conf_path,
                "root": str(node.root),
                "env": node_env(node),  # for `make cluster-restart`
            }
            for node in cluster.nodes
        ],
    }
    run_dir().mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info, indent=2))
    print_progress(
        f"cluster up: carriers call {cluster.sip_remote}; make cluster-status, cluster-down"
    )
    return 0


def _down() -> int:
    info_path = run_dir() / RUN_INFO
    if not info_path.exists():
        print("not up")
        return 0
    info = json.loads(info_path.read_text())
    stop_process_group(int(info["edge"]["pid"]))
    print_progress("edge stopped")
    runtime = select_runtime(info.get("runtime"), build=False)
    for node in info["nodes"]:
        stop_node(runtime, int(node["app_pid"]), node["conf"])
        print_progress(f"{node['name']} stopped")
    # the apps flush their last record changes on the way out: wait before the store goes
    deadline = time.monotonic() + APP_EXIT_TIMEOUT_SECONDS
    while time.monotonic() < deadline and any(_pid_alive(n["app_pid"]) for n in info["nodes"]):
        time.sleep(POLL_SECONDS)
    pg = info["postgres"]
    if pg["data_dir"]:
        PostgresServer(
            admin_url=pg["admin_url"], data_dir=Path(pg["data_dir"]), bin_dir=Path(pg["bin_dir"])
        ).stop()
        print_progress("PostgreSQL stopped")
    info_path.unlink()
    return 0


def _status() -> int:
    info_path = run_dir() / RUN_INFO
    if not info_path.exists():
        print("not up")
        return 1
    info = json.loads(info_path.read_text())
    edge = KamailioEdge(Path(info["edge"]["directory"]))
    status = {
        "edge": {**info["edge"], "alive": _pid_alive(info["edge"]["pid"])},
        "dispatcher": edge.node_states() if _pid_alive(info["edge"]["pid"]) else {},
        "nodes": [
            {**node, "alive": all(_pid_alive(node[k]) for k in ("app_pid", "asterisk_pid"))}
            for node in info["nodes"]
        ],
        "postgres": info["postgres"]["admin_url"].rsplit("@", 1)[-1],
    }
    print(json.dumps(status, indent=2))
    return 0 if _alive(info) else 1


def _records() -> int:
    info_path = run_dir() / RUN_INFO
    if not info_path.exists():
        print("not up; `make cluster-up` first", file=sys.stderr)
        return 1
    for record in all_records(json.loads(info_path.read_text())["database_url"]):
        print(json.dumps(record, sort_keys=True, default=str))
    return 0


def _pid_alive(pid: object) -> bool:
    try:
        os.kill(int(str(pid)), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def _alive(info: Mapping[str, Any]) -> bool:
    pids = [info["edge"]["pid"]]
    for node in info["nodes"]:
        pids += [node["app_pid"], node["asterisk_pid"]]
    return all(_pid_alive(pid) for pid in pids)


if __name__ == "__main__":
    raise SystemExit(main())
