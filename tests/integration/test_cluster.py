"""The cluster on real parts: Kamailio edge, two Asterisk + app nodes, one PostgreSQL, SIPp.

One cluster is shared by the module (devtools.cluster on free ports, nodes on 127.0.11.1 and
127.0.11.2, so it never meets a `make cluster-up` or another test's stack). The carrier is
SIPp on 127.0.0.1 calling the edge; the bot (REFERs after 1 s with a context) and the agent
are SIPp parties that both nodes dial directly. The test that kills a node runs last.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from ari_app.records import Record
from devtools.cluster import Cluster, ClusterNotReady, build_cluster
from devtools.postgres import PostgresUnavailable
from devtools.runtime import Runtime
from devtools.sipp import SipMessage, SippRun
from devtools.stack import free_port
from tests.harness import sipp_finished, until
from tests.integration.test_call_flow import SEED_ESCALATION_HEX

pytestmark = pytest.mark.integration

NODE_HOSTS = ("127.0.11.1", "127.0.11.2")
SECOND_CARRIER = "127.0.11.9"  # on the allow-list: the rate-limit test's flooding source
STRANGER = "127.0.11.8"  # not on the allow-list
# per-source limit of these tests: 40 new requests in 2 s (20/s), above the 10 calls/s loads
RATE_MAX_REQUESTS = 40
BOT_TALK_MS = 1000
AGENT_TALK_MS = 500
SIPP_TIMEOUT = 120
DETECTION_LIMIT_SECONDS = 5.0
ESCALATION_CONTEXT = "escalate_to=agents-queue"


@pytest.fixture(scope="module")
def cluster(runtime: Runtime) -> Iterator[Cluster]:
    root = runtime.scratch_root() / f"test-cluster-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    config = root / "botbridge.toml"
    # one agent contact stands for a pool of agents: ring it while it is on another call
    config.write_text("[bridge]\nagent_ring_in_use = true\n")
    built = build_cluster(
        runtime,
        root,
        free_ports=True,
        node_hosts=NODE_HOSTS,
        carrier_match=("127.0.0.1", SECOND_CARRIER),
        extra_env={"BOTBRIDGE_CONFIG": str(config)},
        edge_overrides={"rate_max_requests": RATE_MAX_REQUESTS},
    )
    try:
        built.start()
    except (ClusterNotReady, PostgresUnavailable) as exc:
        pytest.fail(str(exc))
    yield built
    built.stop()


def start_bot_and_agent(cluster: Cluster, calls: int) -> tuple[SippRun, SippRun]:
    sipp = cluster.sipp()
    bot = sipp.start(
        "load/bot_refer",
        local_port=cluster.bot_port,
        keys={
            "refer_user": "escalation",
            "refer_headers": f"?User-to-User={SEED_ESCALATION_HEX}%3Bencoding%3Dhex",
        },
        extra=["-aa", "-d", str(BOT_TALK_MS)],
        calls=calls,
        timeout=SIPP_TIMEOUT,
    )
    agent = sipp.start(
        "load/agent",
        local_port=cluster.agent_port,
        extra=["-aa", "-d", str(AGENT_TALK_MS)],
        calls=calls,
        timeout=SIPP_TIMEOUT,
    )
    return bot, agent


def start_callers(cluster: Cluster, *, calls: int, rate: float, prefix: str) -> SippRun:
    return cluster.sipp().start(
        "cluster/caller",
        local_port=free_port(udp_too=True),
        remote=cluster.sip_remote,
        service="5551000",
        keys={"caller_prefix": prefix},
        extra=["-r", f"{rate:g}", "-l", str(calls)],
        calls=calls,
        timeout=SIPP_TIMEOUT,
    )


async def finish_parties(*runs: SippRun) -> None:
    """Wait for every party; each must have exited 0. The bot's scenario fails a call whose
    final NOTIFY sipfrag is not 200, so this also asserts that every bot was told its
    transfer succeeded."""
    for run in runs:
        await sipp_finished(run, SIPP_TIMEOUT)
        assert run.wait(1) == 0, run.report()[-3000:]


def records_of(cluster: Cluster, prefix: str) -> list[Record]:
    return [r for r in cluster.records() if str(r.get("caller_number") or "").startswith(prefix)]


def by_call_id(run: SippRun) -> dict[str, list[SipMessage]]:
    calls: dict[str, list[SipMessage]] = {}
    for message in run.messages():
        calls.setdefault(message.header("Call-ID") or "", []).append(message)
    return calls


def host_of(value: str) -> str:
    """The host of a Via header value or a SIP URI (enough for IPv4 loopback)."""
    if value.startswith("SIP/2.0/"):
        value = value.split(" ", 1)[1]
    value = value.split("sip:", 1)[-1].split("@")[-1]
    return value.split(":", 1)[0].split(";", 1)[0].strip("<>")


async def test_allow_list_and_rate_limit_at_the_edge(cluster: Cluster) -> None:
    sipp = cluster.sipp()
    # a stranger is refused by the edge, and a node refuses it too when called directly;
    # so does a node called directly by a carrier it should only hear through the edge
    for source, remote in (
        (STRANGER, cluster.sip_remote),
        (STRANGER, cluster.nodes[0].sip_remote),
        (SECOND_CARRIER, cluster.nodes[1].sip_remote),
    ):
        stranger = sipp.start(
            "allow_list/refused",
            local_ip=source,
            local_port=free_port(source, udp_too=True),
            remote=remote,
            service="5551000",
            keys={"caller_number": "stranger"},
        )
        await sipp_finished(stranger, 30)
        assert stranger.wait(1) == 0, stranger.report()
        refusal = [m for m in stranger.messages() if m.status == 403]
        assert refusal, stranger.report()
        server = refusal[0].header("Server") or refusal[0].header("User-Agent") or ""
        edge_refused = remote == cluster.sip_remote
        assert ("botbridge-edge" in server) == edge_refused, stranger.report()
    assert not [r for r in cluster.records() if r.get("caller_number") == "stranger"]

    # an allowed carrier cannot use the edge to reach anything but a node inside a dialog
    target_port = free_port(udp_too=True)
    forged = sipp.start(
        "cluster/forged_in_dialog",
        local_port=free_port(udp_too=True),
        remote=cluster.sip_remote,
        keys={"target": f"127.0.0.1:{target_port}"},
    )
    await sipp_finished(forged, 30)
    assert forged.wait(1) == 0, forged.report()

    # one allowed source floods (200 requests/s for 2 s) while another places calls
    bot, agent = start_bot_and_agent(cluster, calls=10)
    flood = sipp.start(
        "cluster/options_burst",
        local_ip=SECOND_CARRIER,
        local_port=free_port(SECOND_CARRIER, udp_too=True),
        remote=cluster.sip_remote,
        extra=["-r", "200", "-l", "400"],
        calls=400,
        timeout=60,
    )
    callers = start_callers(cluster, calls=10, rate=5, prefix="3777")
    await finish_parties(flood, callers, bot, agent)
    replies = Counter(m.status for m in flood.messages() if m.status is not None)
    edge = cluster.edge_settings
    assert replies[503] > 0, replies  # throttled at the edge
    # pike lets about one window's worth through before it blocks the source
    assert 0 < replies[200] <= edge.rate_max_requests * 3, replies
    assert replies[200] + replies[503] == 400, replies

    def all_ten() -> list[Record] | None:
        rs = records_of(cluster, "3777")
        return rs if len(rs) == 10 else None

    records = await until(all_ten, 15, "the other source's 10 calls in the store")
    assert {r["outcome"] for r in records} == {"escalated"}, records


async def test_calls_over_tcp_and_tls_reach_the_nodes(cluster: Cluster) -> None:
    """The edge takes TCP and TLS from carriers and speaks UDP to the nodes; the node's BYE
    finds the caller over the connection the caller opened."""
    bot, agent = start_bot_and_agent(cluster, calls=2)
    rp = cluster.runtime.runtime_path
    certs = cluster.root / "tls"
    for transport, remote, prefix in (
        ("t1", cluster.sip_remote, "4777"),
        ("l1", cluster.tls_remote, "5777"),
    ):
        tls = ["-tls_cert", rp(certs / "server.crt"), "-tls_key", rp(certs / "server.key")]
        run = cluster.sipp().start(
            "cluster/caller",
            local_port=free_port(udp_too=True),
            remote=remote,
            service="5551000",
            transport=transport,
            keys={"caller_prefix": prefix},
            extra=tls if transport == "l1" else [],
        )
        await sipp_finished(run, 60)
        assert run.wait(1) == 0, run.report()[-3000:]
        invite = next(m for m in run.messages() if m.method == "INVITE")
        via = invite.header("Via") or ""
        assert via.startswith("SIP/2.0/TCP" if transport == "t1" else "SIP/2.0/TLS"), via
        answer = next(m for m in run.messages() if m.status == 200)
        assert len(answer.header_all("Record-Route")) >= 1, answer
        assert any(m.method == "BYE" and m.direction == "received" for m in run.messages())
    await finish_parties(bot, agent)
    for prefix in ("4777", "5777"):

        def ended(p: str = prefix) -> list[Record] | None:
            return [r for r in records_of(cluster, p) if r.get("ended_at")] or None

        records = await until(ended, 15, f"the {prefix} call's ended record")
        assert [r["outcome"] for r in records] == ["escalated"], records


async def test_load_through_the_edge_spreads_over_both_nodes(cluster: Cluster) -> None:
    calls = 100
    bot, agent = start_bot_and_agent(cluster, calls=calls)
    callers = start_callers(cluster, calls=calls, rate=10, prefix="1777")
    await finish_parties(callers, bot, agent)
    # exit code 0: no failed call; and on the wire every call was answered and ended by BYE
    wire = by_call_id(callers)
    assert len(wire) == calls
    for messages in wire.values():
        assert any(m.status == 200 and m.cseq_method == "INVITE" for m in messages), messages
        assert any(m.method == "BYE" and m.direction == "received" for m in messages), messages

    def ended() -> list[Record] | None:
        rs = records_of(cluster, "1777")
        return rs if len(rs) == calls and all(r.get("ended_at") for r in rs) else None

    records = await until(ended, 20, f"{calls} ended records")
    per_node = Counter(r["node"] for r in records)
    assert set(per_node) == {"node-1", "node-2"}, per_node
    assert min(per_node.values()) >= calls // 4, per_node  # round robin: about half each
    assert {r["outcome"] for r in records} == {"escalated"}
    assert {r["queue"] for r in records} == {"agents-queue"}
    assert all(r.get("agent_answered_at") for r in records), records
    by_iid = {r["interaction_id"]: r for r in records}

    # every call reached the agent with its context and interaction id
    agent_invites = [m for m in agent.messages() if m.method == "INVITE"]
    assert len({m.header("Call-ID") for m in agent_invites}) == calls
    seen = set()
    for invite in agent_invites:
        iid = invite.header("X-Interaction-Id")
        assert iid in by_iid, invite
        assert (invite.header("User-to-User") or "").startswith(SEED_ESCALATION_HEX), invite
        assert invite.header("X-Escalate-To") == "agents-queue", invite
        seen.add(iid)
    assert seen == set(by_iid)
    assert all(ESCALATION_CONTEXT.split("=")[1] in (r["context_json"] or "") for r in records)

    # the bot's REFER went to the node that dialled it, on both nodes
    node_host = {n.config.store.node: str(n.config.sip.host) for n in cluster.nodes}
    refers_per_node: Counter[str] = Counter()
    for messages in by_call_id(bot).values():
        invite = next(m for m in messages if m.method == "INVITE" and m.direction == "received")
        iid = invite.header("X-Interaction-Id")
        assert iid in by_iid
        owner = by_iid[iid]["node"] or ""
        assert host_of(invite.header("Via") or "") == node_host[owner], invite
        refer = next(m for m in messages if m.method == "REFER" and m.direction == "sent")
        assert host_of(refer.start_line.split(" ")[1]) == node_host[owner], refer
        accepted = [m for m in messages if m.status == 202 and m.cseq_method == "REFER"]
        assert accepted, messages
        refers_per_node[owner] += 1
    assert set(refers_per_node) == {"node-1", "node-2"}, refers_per_node


async def test_a_killed_node_loses_only_its_calls_and_is_reconciled(cluster: Cluster) -> None:
    assert cluster.edge is not None
    calls, rate = 60, 10
    bot, agent = start_bot_and_agent(cluster, calls=calls)
    callers = start_callers(cluster, calls=calls, rate=rate, prefix="2777")
    victim, survivor = cluster.nodes
    await until(
        lambda: {r["node"] for r in records_of(cluster, "2777")} == {"node-1", "node-2"},
        15,
        "calls on both nodes",
    )
    killed_at = time.time()
    cluster.kill_node(victim)
    victim_uri = cluster.node_uri(victim)

    def victim_out() -> bool:
        assert cluster.edge is not None
        return cluster.edge.node_states().get(victim_uri, "").startswith("I")

    await until(victim_out, DETECTION_LIMIT_SECONDS, "the edge to take the dead node out")
    detected_after = time.time() - killed_at
    assert detected_after <= DETECTION_LIMIT_SECONDS

    # the callers end every call (the lost ones by their timeouts); the bot and the agent
    # would wait for the dead node's dialogs until their own timeout: stop them once idle
    await sipp_finished(callers, SIPP_TIMEOUT)
    for run in (bot, agent):
        run.stop()
    records = records_of(cluster, "2777")
    number_of = {str(r["caller_number"]): r for r in records}

    # the caller's view per call: when its INVITE left, whether it was answered and ended
    outcome: dict[str, tuple[float, bool]] = {}
    for messages in by_call_id(callers).values():
        invite = next(m for m in messages if m.method == "INVITE" and m.direction == "sent")
        number = (invite.header("From") or "").split("sip:", 1)[1].split("@", 1)[0]
        completed = any(m.method == "BYE" and m.direction == "received" for m in messages)
        outcome[number] = (invite.at, completed)
    assert len(outcome) == calls

    # calls on the survivor: untouched, every one answered and ended by the far end
    on_survivor = [n for n, r in number_of.items() if r["node"] == survivor.config.store.node]
    assert on_survivor and all(outcome[n][1] for n in on_survivor), on_survivor
    # every call placed after the kill completed (failed over, then only the survivor)
    after_kill = [n for n, (sent, _) in outcome.items() if sent > killed_at]
    assert after_kill, outcome
    assert all(outcome[n][1] for n in after_kill), [n for n in after_kill if not outcome[n][1]]
    assert all(number_of[n]["node"] == survivor.config.store.node for n in after_kill)
    # the victim's calls in progress at the kill were lost with it, and are still open
    lost = [n for n, r in number_of.items() if r["node"] == victim.config.store.node]
    open_lost = [n for n in lost if not number_of[n].get("ended_at")]
    assert open_lost, "no call was in progress on the killed node"

    # the node comes back: reconciliation closes its open records, the edge uses it again
    cluster.revive_node(victim)
    cluster.wait_nodes_active()

    def closed() -> bool:
        rs = {str(r["caller_number"]): r for r in records_of(cluster, "2777")}
        return all(rs[n].get("ended_at") and rs[n].get("reconciled_at") for n in open_lost)

    await until(closed, 20, "the revived node to close its open records")
