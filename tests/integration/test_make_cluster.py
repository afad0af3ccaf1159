"""`make cluster-up`, `make cluster-restart` and `make cluster-down` as typed in a shell,
with calls running through the edge.

The targets run in a checkout of their own (tests/checkout.py): its run directory, hence
its cluster.json and the cluster's instance directory, are its own. The cluster's addresses
come from the ``BOTBRIDGE_CLUSTER_*`` variables an operator sets (docs/scaling.md): free
loopback ports, the nodes on 127.0.12.1 and 127.0.12.2, so the cluster never meets a
developer's `make cluster-up`, nor test_cluster.py's cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cluster import ACTIVE, RUN_INFO, SCENARIOS_DIR
from devtools.devstack import free_rtp_range
from devtools.runtime import Runtime
from devtools.sipp import Sipp
from devtools.stack import free_port
from tests.checkout import Checkout, make_checkout
from tests.harness import sipp_finished, until
from tests.records import assert_resolved_once, closed_calls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODE_HOSTS = ("127.0.12.1", "127.0.12.2")
RTP_PORTS = 1000  # per node, as `make cluster-up`'s default range
ROLLING_RATE = 10  # calls/s
ROLLING_CALLS = 200
ROLLING_BOT_TALK_MS = 8000
ROLLING_START_AFTER_SECONDS = 5  # calls in progress on both nodes by then
SIPP_TIMEOUT_SECONDS = 180
RECORDS_CLOSED_SECONDS = 30
PREFIX = "9777"
HANDED_OVER = "handed its calls over"
IN_SERVICE = "edge: every node in service: "


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Checkout]:
    checkout = make_checkout(tmp_path / "checkout", RUN_INFO)
    rtp = free_rtp_range()
    checkout.env.update(
        {
            "BOTBRIDGE_CLUSTER_EDGE_PORT": str(free_port(udp_too=True)),
            "BOTBRIDGE_CLUSTER_EDGE_TLS_PORT": str(free_port()),
            "BOTBRIDGE_CLUSTER_NODE_HOSTS": ",".join(NODE_HOSTS),
            "BOTBRIDGE_CLUSTER_SIP_PORT": str(free_port(NODE_HOSTS[0], udp_too=True)),
            "BOTBRIDGE_CLUSTER_TLS_PORT": str(free_port(NODE_HOSTS[0])),
            "BOTBRIDGE_CLUSTER_ARI_PORT": str(free_port(NODE_HOSTS[0])),
            "BOTBRIDGE_CLUSTER_HTTP_PORT": str(free_port(NODE_HOSTS[0])),
            "BOTBRIDGE_CLUSTER_RTP_START": str(rtp),
            "BOTBRIDGE_CLUSTER_RTP_END": str(rtp + RTP_PORTS - 1),
            "BOTBRIDGE_CLUSTER_BOT_URI": f"sip:voicebot@127.0.0.1:{free_port(udp_too=True)}",
            "BOTBRIDGE_CLUSTER_AGENT_CONTACT": f"sip:agent1@127.0.0.1:{free_port(udp_too=True)}",
        }
    )
    yield checkout
    if checkout.info_path.exists():  # a failed test must not leave the cluster running
        root = checkout.info()["root"]
        checkout.make("cluster-down")
        shutil.rmtree(root, ignore_errors=True)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_make_cluster_restart_under_load_fails_no_call(
    runtime: Runtime, checkout: Checkout
) -> None:
    """`make cluster-up` on the given addresses; 200 calls at 10 calls/s through the edge,
    8 s bot conversations; `make cluster-restart` 5 s in hands each node's app over in turn:
    the edge has both nodes in service after each handover, no caller or bot call fails,
    every call has one record, `resolved` after its whole conversation, on both nodes;
    `make cluster-down` stops everything."""
    up = checkout.make("cluster-up")
    assert up.returncode == 0, up
    info = checkout.info()
    env = checkout.env
    edge = f"127.0.0.1:{env['BOTBRIDGE_CLUSTER_EDGE_PORT']}"
    assert info["edge"]["sip"] == edge
    sip_port = env["BOTBRIDGE_CLUSTER_SIP_PORT"]
    assert [n["sip"] for n in info["nodes"]] == [f"{h}:{sip_port}" for h in NODE_HOSTS]
    assert Path(info["root"]).name.startswith("cluster-")

    sipp = Sipp(runtime, SCENARIOS_DIR, Path(info["root"]) / "sipp")
    try:
        bot = sipp.start(
            "load/bot_resolve",
            local_port=int(env["BOTBRIDGE_CLUSTER_BOT_URI"].rsplit(":", 1)[1]),
            extra=["-aa", "-d", str(ROLLING_BOT_TALK_MS)],
            calls=ROLLING_CALLS,
            timeout=SIPP_TIMEOUT_SECONDS,
        )
        callers = sipp.start(
            "cluster/caller",
            local_port=free_port(udp_too=True),
            remote=edge,
            service="5551000",
            keys={"caller_prefix": PREFIX},
            extra=["-r", str(ROLLING_RATE), "-l", str(ROLLING_CALLS)],
            calls=ROLLING_CALLS,
            timeout=SIPP_TIMEOUT_SECONDS,
        )
        await asyncio.sleep(ROLLING_START_AFTER_SECONDS)
        restart = checkout.make("cluster-restart")
        assert restart.returncode == 0, restart
        print(restart.stdout)
        lines = restart.stdout.splitlines()
        assert sum(HANDED_OVER in line for line in lines) == len(NODE_HOSTS), restart.stdout
        seen = [json.loads(ln.split(IN_SERVICE, 1)[1]) for ln in lines if IN_SERVICE in ln]
        assert len(seen) == len(NODE_HOSTS), restart.stdout  # after each node's handover
        for states in seen:
            assert len(states) == len(NODE_HOSTS), states
            assert all(flags.startswith(ACTIVE[0]) for flags in states.values()), states
        after = checkout.info()
        old = [n["app_pid"] for n in info["nodes"]]
        new = [n["app_pid"] for n in after["nodes"]]
        assert not set(old) & set(new) and all(gone(pid) for pid in old), (old, new)

        status = checkout.make("cluster-status")
        assert status.returncode == 0, status
        dispatcher = json.loads(status.stdout)["dispatcher"]
        assert len(dispatcher) == len(NODE_HOSTS), dispatcher
        assert all(flags.startswith(ACTIVE[0]) for flags in dispatcher.values()), dispatcher

        for party in (callers, bot):
            await sipp_finished(party, SIPP_TIMEOUT_SECONDS)
            assert party.wait(1) == 0, party.report()[-3000:]
        assert sum(1 for m in bot.messages() if m.method == "INVITE") == ROLLING_CALLS
    finally:
        sipp.stop_all()

    records = await closed_calls(
        info["database_url"], PREFIX, ROLLING_CALLS, RECORDS_CLOSED_SECONDS
    )
    assert_resolved_once(records, ROLLING_CALLS, ROLLING_BOT_TALK_MS)
    assert {r["node"] for r in records} == {"node-1", "node-2"}

    down = checkout.make("cluster-down")
    assert down.returncode == 0, down
    assert not checkout.info_path.exists()
    pids = [after["edge"]["pid"]]
    for node in after["nodes"]:
        pids += [node["app_pid"], node["asterisk_pid"]]
    await until(lambda: all(gone(pid) for pid in pids), 20, "the cluster's processes gone")
    shutil.rmtree(after["root"], ignore_errors=True)
