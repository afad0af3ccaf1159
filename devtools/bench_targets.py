"""The bench's two targets: the app (the dev stack) and the reference (the same Asterisk
configuration with a dialplan that does the app's work, no app), with the bench's edits of
the rendered configuration (agent pool, maxcalls, RTP ranges)."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ari_app.asterisk import render

# the only imports from the shipped package (kept together: these modules may move)
from ari_app.config import Config
from devtools.bench_analysis import prometheus_total
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.stack import AsteriskInstance, free_port

HERE = Path(__file__).resolve().parent
REFERENCE_DIALPLAN = HERE / "reference" / "extensions.conf"

TARGETS = ("app", "reference")
BUSINESS_HOURS_CONTEXT = "business_hours=available"
# Asterisk's maxcalls for both targets: the shipped 500 would refuse the memory hold's calls
BENCH_MAX_CALLS = 10000
DRAIN_TIMEOUT_SECONDS = 40
# RTP ports per target: every call holds two RTP sessions (caller and bot legs, plus the
# agent's), so the test stacks' 200-port block would refuse calls with 488 beyond ~50 calls.
# Asterisk skips ports that are in use, so overlapping another stack's block is harmless.
RTP_RANGES = {"app": (12000, 19999), "reference": (20000, 27999)}


class BenchInstance(AsteriskInstance):
    """An AsteriskInstance whose rendered files are edited before Asterisk starts."""

    def __init__(
        self,
        runtime: Runtime,
        config: Config,
        root: Path,
        edits: Mapping[str, Callable[[str], str]],
    ) -> None:
        super().__init__(runtime, config, root)
        self.edits = dict(edits)

    def render_config(self) -> None:
        super().render_config()
        for name, edit in self.edits.items():
            path = self.root / "etc" / name
            path.write_text(edit(path.read_text()))


# agents the bench's queues stand for: member lines of the one SIPp agent (see agent_pool)
BENCH_AGENTS = 50


def agent_pool(queues_conf: str, agents: int = BENCH_AGENTS) -> str:
    """queues.conf with every queue a pool of ``agents`` members that all reach the one SIPp
    agent, each rung while in use, one member per caller (``rrmemory``).

    The shipped queues have one member (``PJSIP/agent1``, ``ringinuse = no``): one agent call
    at a time. A single member with ``ringinuse = yes`` is not a pool either: app_queue lets a
    waiting caller ring only when no caller ahead of it is still waiting to ring, otherwise
    it rechecks after 1 s; under load the callers chain and each waits about a second
    (docs/performance.md). Each member line is its own interface (``PJSIP/a<n>@agent1``: the
    agent endpoint, request user ``a<n>``) with the endpoint's device state.
    """
    members = "".join(
        f"member => PJSIP/a{n}@agent1,0,agent-{n},PJSIP/agent1\n" for n in range(1, agents + 1)
    )
    text = re.sub(r"^(\s*ringinuse\s*=\s*)no\b", r"\1yes", queues_conf, flags=re.MULTILINE)
    text = re.sub(r"^(\s*strategy\s*=\s*)\w+", r"\1rrmemory", text, flags=re.MULTILINE)
    return re.sub(
        r"^member\s*=>\s*PJSIP/agent1(,[^\n]*)?\s*$\n?", members, text, flags=re.MULTILINE
    )


def configured_agents(agent_port: int, agents: int = BENCH_AGENTS) -> str:
    """The same pool as configuration instead of an edit of queues.conf: ``agents`` agents
    ``[agents.a<n>]`` (static, in both shipped queues), each its own endpoint whose contact is
    the one SIPp agent (request user ``a<n>``), each rung for one caller at a time
    (``ringinuse = no``: its own endpoint's device state), strategy ``rrmemory``."""
    queues = "".join(
        f'[queues.{queue}]\nstrategy = "rrmemory"\nring_in_use = false\n\n'
        for queue in ("agents-queue", "billing-queue")
    )
    members = "".join(
        f'[agents.a{n}]\ncontact = "sip:a{n}@127.0.0.1:{agent_port}"\n'
        'queues = { agents-queue = 0, billing-queue = 0 }\nmembership = "static"\n\n'
        for n in range(1, agents + 1)
    )
    return queues + members


def external_target(agent_port: int) -> str:
    """The bot's escalations routed to an external target whose trunk is the one SIPp agent
    (one contact standing for a contact centre's many agents; no queue in between)."""
    return (
        '[routing]\nagents-queue = "bench-acd"\n\n'
        f'[external_targets.bench-acd]\naddress = "127.0.0.1:{agent_port}"\n'
        'destination = "agent1"\n'
    )


def reference_dialplan(stack: DevStack) -> Callable[[str], str]:
    default = stack.config.profiles["default"]
    values = {
        "BOT_ENDPOINT": default.bot_endpoint,
        "BOT_ANSWER_TIMEOUT": default.answer_timeout_seconds,
        "BUSINESS_HOURS_UUI": BUSINESS_HOURS_CONTEXT.encode().hex(),
        "QUEUE_TIMEOUT_SECONDS": stack.config.bridge.queue_timeout_seconds,
    }
    text = render(REFERENCE_DIALPLAN.read_text(), values)
    return lambda _shipped: text


@dataclass
class Target:
    name: str
    stack: DevStack
    with_app: bool

    @property
    def instance(self) -> AsteriskInstance:
        return self.stack.instance

    @property
    def app_pid(self) -> int | None:
        proc = self.stack.app_proc
        return proc.pid if self.with_app and proc is not None else None

    @property
    def asterisk_pid(self) -> int | None:
        return self.instance.pid

    @property
    def metrics_url(self) -> str | None:
        if not self.with_app:
            return None
        http = self.stack.config.http
        return f"http://{http.host}:{http.port}/metrics"

    def start(self) -> None:
        if self.with_app:
            self.stack.start()
        else:
            self.instance.start()

    def stop(self) -> None:
        if self.with_app:
            self.stack.stop()
        else:
            self.instance.stop()

    def app_alive(self) -> bool:
        proc = self.stack.app_proc
        return not self.with_app or (proc is not None and proc.poll() is None)

    def channels(self) -> int | None:
        try:
            out = self.instance.cli("core show channels count", check=False).stdout
        except subprocess.TimeoutExpired:
            return None
        match = re.search(r"(\d+) active channels?", out)
        return int(match.group(1)) if match else None

    def drain(self, timeout: float = DRAIN_TIMEOUT_SECONDS) -> int | None:
        """Wait until Asterisk has no channel left; the count still there at the deadline."""
        deadline = time.monotonic() + timeout
        count = self.channels()
        while count and time.monotonic() < deadline:
            time.sleep(0.5)
            count = self.channels()
        return count

    def metric(self, name: str) -> float | None:
        url = self.metrics_url
        if url is None:
            return None
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode(errors="replace")
        except (OSError, urllib.error.URLError):
            return None
        return prometheus_total(text, name)


def make_target(
    name: str,
    runtime: Runtime,
    root: Path,
    *,
    shipped_queues: bool,
    config_file: Path,
    config_agents: bool = False,
    external: bool = False,
) -> Target:
    rtp_start, rtp_end = RTP_RANGES[name]
    env = {
        "BOTBRIDGE_CONFIG": str(config_file),
        "BOTBRIDGE_RTP_START": str(rtp_start),
        "BOTBRIDGE_RTP_END": str(rtp_end),
    }
    # the reference's dialplan queues the caller itself: with an external target it keeps the
    # edited pool
    external = external and name == "app"
    if config_agents or external:  # the pool as configuration, in this target's own file
        agent_port = free_port(udp_too=True)
        own = root / f"{name}-bench.toml"
        human = external_target(agent_port) if external else configured_agents(agent_port)
        own.write_text(config_file.read_text() + "\n" + human)
        env["BOTBRIDGE_CONFIG"] = str(own)
        env["BOTBRIDGE_AGENT_CONTACT"] = f"sip:agent1@127.0.0.1:{agent_port}"
    stack = build_stack(runtime, root / name, free_ports=True, extra_env=env)
    edits: dict[str, Callable[[str], str]] = {}
    if not (shipped_queues or config_agents or external):
        edits["queues.conf"] = agent_pool
    with_app = name == "app"
    if not with_app:
        edits["extensions.conf"] = reference_dialplan(stack)
    stack.instance = BenchInstance(runtime, stack.config, stack.root, edits)
    return Target(name, stack, with_app)
