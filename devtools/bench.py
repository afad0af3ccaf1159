"""``make bench``: how many calls per second the bridge carries, next to Asterisk alone.

Two targets run side by side on this machine, each on its own free loopback ports:

- ``app``: the dev stack, Asterisk with the shipped configuration plus the Stasis app
  (``devtools.devstack.build_stack``);
- ``reference``: an Asterisk with the same configuration except ``extensions.conf``, replaced
  by ``devtools/reference/extensions.conf``: the carrier context ``Dial()``s the bot directly
  with the same headers and the bot's REFER is handled in the dialplan (``Queue()``). This is
  the physical limit of Asterisk on this machine for the same SIP traffic.

SIPp plays the carrier (caller), the bot and the agent (``tests/scenarios/load``). Steps,
alternating app / reference at each rate:

1. ramp: for each rate (calls/s) and flow (``resolve``: the bot talks ~1 s and hangs up;
   ``transfer``: the bot REFERs after ~1 s, the caller is queued and an agent answers) place
   ``--calls`` calls; a target's ramp of a flow stops at its first step with a failed call.
   Each step records CPU (app, Asterisk, SIPp), ARI requests and events per call;
2. latency: ``--latency-calls`` calls per target at ``--latency-rate`` with SIPp message
   traces, in ``--latency-rounds`` rounds with the targets taking turns: carrier INVITE ->
   bot INVITE and bot REFER -> agent INVITE, p50/p99, and the steal while they ran;
3. memory: ``--hold-calls`` concurrent calls held ``--hold-seconds``; RSS per call.

Figures are printed (and written with ``--json``), never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ari_app.asterisk import render

# the only imports from the shipped package (kept together: these modules may move)
from ari_app.config import Config
from devtools.bench_analysis import (
    SippCounts,
    fmt,
    format_table,
    parse_rates,
    parse_screen_counts,
    parse_sipp_stat,
    percentile,
    proc_cpu_ticks,
    proc_rss_kb,
    proc_stat_steal,
    prometheus_total,
    setup_delays_ms,
    steal_percent,
    transfer_delays_ms,
)
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime, RuntimeUnavailable, select_runtime
from devtools.sipp import SipMessage, parse_trace, wait_bound
from devtools.stack import AsteriskInstance, StackError, free_port

HERE = Path(__file__).resolve().parent
# the load scenarios are shared with the load regression test (tests/integration/test_load.py)
SCENARIOS_DIR = HERE.parent / "tests" / "scenarios" / "load"
REFERENCE_DIALPLAN = HERE / "reference" / "extensions.conf"

TARGETS = ("app", "reference")
FLOWS = ("resolve", "transfer")
DEFAULT_RATES = "25,50,100,150,200,300"
SERVICE_NUMBER = "5551000"
CALLER_PREFIX = "1555"  # caller numbers are 1555<SIPp call number>, unique within a run
REFER_USER = "escalation"
ESCALATION_CONTEXT = "escalate_to=agents-queue"
BUSINESS_HOURS_CONTEXT = "business_hours=available"
REQUESTS_METRIC = "botbridge_ari_requests_total"
EVENTS_METRIC = "botbridge_ari_events_total"
# new calls the app shed (admission control: fallback queue or 503 instead of the bot)
SHED_METRIC = "botbridge_calls_shed_total"
# read from the app's /metrics before and after each step, in this order (StepResult fields
# requests, events; the shed count goes into the step's note)
STEP_METRICS = (REQUESTS_METRIC, EVENTS_METRIC, SHED_METRIC)
# Asterisk's maxcalls for both targets: the shipped 500 would refuse the memory hold's calls
BENCH_MAX_CALLS = 10000
DRAIN_TIMEOUT_SECONDS = 40
# RTP ports per target: every call holds two RTP sessions (caller and bot legs, plus the
# agent's), so the test stacks' 200-port block would refuse calls with 488 beyond ~50 calls.
# Asterisk skips ports that are in use, so overlapping another stack's block is harmless.
RTP_RANGES = {"app": (12000, 19999), "reference": (20000, 27999)}
PARTY_GRACE_SECONDS = 15
# the latency part's traced calls are placed in this many rounds per target, the targets
# taking turns (Bench.latency): a shared machine's noise changes within seconds
LATENCY_ROUNDS = 4
# a latency round with at most this much steal (%) counts as quiet: the report gives the
# figures of the quiet rounds beside those of all rounds (steal comes in bursts of seconds)
QUIET_STEAL_PERCENT = 5.0
RECV_TIMEOUT_MS = 20000
# SIPp's socket buffers (capped by net.core.rmem_max): a burst must not overflow them
SIPP_SOCKET_BUFFER = 4 * 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- SIPp parties --------------------------------------------------------------------------


@dataclass
class Party:
    """One SIPp process (caller, bot or agent) of a step, with its files."""

    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    control_port: int
    traced: bool
    returncode: int | None = None
    cpu_seconds: float = 0.0

    def poll(self) -> int | None:
        """Reap the process when it has exited (os.wait4 also gives its CPU time)."""
        if self.returncode is not None:
            return self.returncode
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return self.returncode

    @property
    def running(self) -> bool:
        return self.poll() is None

    def report(self) -> str:
        """The end of its output (what SIPp printed before it exited)."""
        return (self.workdir / "stdout.log").read_text(errors="replace")[-1500:]

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return True
            time.sleep(0.05)
        return not self.running

    def stop(self) -> None:
        """Quit SIPp: its control port's "q" (softly, stats written), then signals."""
        if not self.running:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(2):  # a second "q" quits without waiting for open calls
                with contextlib.suppress(OSError):
                    sock.sendto(b"q", ("127.0.0.1", self.control_port))
                if self.wait(2):
                    return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            if self.wait(3):
                return

    def counts(self) -> SippCounts | None:
        stat = self.workdir / "stat.csv"
        counts = parse_sipp_stat(stat.read_text(errors="replace")) if stat.exists() else None
        if counts is None:
            screen = self.workdir / "screen.log"
            if screen.exists():
                counts = parse_screen_counts(screen.read_text(errors="replace"))
        return counts

    def messages(self) -> list[SipMessage]:
        path = self.workdir / "messages.log"
        return parse_trace(path.read_text(errors="replace")) if path.exists() else []

    def errors_tail(self, chars: int = 1500) -> str:
        path = self.workdir / "errors.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_udp_block(size: int = 100) -> int:
    """Start of ``size`` consecutive UDP ports free on loopback (SIPp's media ports)."""
    for _ in range(50):
        start = free_port(udp_too=True)
        if start + size >= 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(start, start + size, 2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise StackError("no free block of UDP ports for SIPp media")


class SippLauncher:
    """Starts SIPp parties of the bench inside the runtime; files under ``run_root``."""

    def __init__(self, runtime: Runtime, run_root: Path) -> None:
        self.runtime = runtime
        self.run_root = run_root
        self._count = 0

    def start(
        self,
        scenario: str,
        *,
        name: str,
        local_port: int,
        calls: int,
        timeout_s: float,
        remote: str | None = None,
        rate: float | None = None,
        limit: int | None = None,
        pause_ms: int | None = None,
        keys: Mapping[str, str] | None = None,
        trace: bool = False,
        recv_timeout_ms: int = RECV_TIMEOUT_MS,
        uas: bool = False,
    ) -> Party:
        self._count += 1
        workdir = self.run_root / f"{self._count:03d}-{name}"
        workdir.mkdir(parents=True)
        shutil.copy(SCENARIOS_DIR / f"{scenario}.xml", workdir / "scenario.xml")
        rp = self.runtime.runtime_path
        control_port = free_port(udp_too=True)
        media = free_udp_block()
        argv = [
            "sipp",
            "-sf",
            rp(workdir / "scenario.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(local_port),
            "-t",
            "u1",
            "-m",
            str(calls),
            "-nostdin",
            "-cp",
            str(control_port),
            "-min_rtp_port",
            str(media),
            "-max_rtp_port",
            str(media + 99),
            "-timeout",
            f"{max(1, int(timeout_s))}s",
            "-timeout_error",
            "-recv_timeout",
            str(recv_timeout_ms),
            "-buff_size",
            str(SIPP_SOCKET_BUFFER),
            "-trace_stat",
            "-stf",
            rp(workdir / "stat.csv"),
            "-fd",
            "1",
            "-trace_screen",
            "-screen_file",
            rp(workdir / "screen.log"),
            "-trace_err",
            "-error_file",
            rp(workdir / "errors.log"),
        ]
        if uas:
            argv.append("-aa")  # a stray NOTIFY/INFO/UPDATE gets 200 instead of failing a call
        if rate is not None:
            argv += ["-r", f"{rate:g}", "-rp", "1000"]
        if limit is not None:
            argv += ["-l", str(limit)]
        if pause_ms is not None:
            argv += ["-d", str(pause_ms)]
        for key, value in (keys or {}).items():
            argv += ["-key", key, value]
        if trace:
            argv += ["-trace_msg", "-message_file", rp(workdir / "messages.log")]
        if remote:
            argv += ["-s", SERVICE_NUMBER, remote]
        # the child keeps its own copy of the descriptor; ours is closed once it has started
        with (workdir / "stdout.log").open("wb") as stdout:
            proc = subprocess.Popen(
                self.runtime.command(argv),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_raise_nofile,
            )
        party = Party(name, proc, workdir, control_port, trace)
        if uas:  # the bot and the agent listen before the caller starts
            try:
                wait_bound("127.0.0.1", local_port, udp=True, run=party)
            except (RuntimeError, OSError) as exc:
                raise StackError(str(exc)) from exc
        else:
            time.sleep(0.1)
        if party.poll() is not None:
            raise StackError(f"SIPp {name} exited at once ({party.returncode}):\n{party.report()}")
        return party


# -- the two targets -----------------------------------------------------------------------


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
    return re.sub(r"^member\s*=>\s*PJSIP/agent1\s*$\n?", members, text, flags=re.MULTILINE)


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
    name: str, runtime: Runtime, root: Path, *, shipped_queues: bool, config_file: Path
) -> Target:
    rtp_start, rtp_end = RTP_RANGES[name]
    stack = build_stack(
        runtime,
        root / name,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": str(config_file),
            "BOTBRIDGE_RTP_START": str(rtp_start),
            "BOTBRIDGE_RTP_END": str(rtp_end),
        },
    )
    edits: dict[str, Callable[[str], str]] = {}
    if not shipped_queues:
        edits["queues.conf"] = agent_pool
    with_app = name == "app"
    if not with_app:
        edits["extensions.conf"] = reference_dialplan(stack)
    stack.instance = BenchInstance(runtime, stack.config, stack.root, edits)
    return Target(name, stack, with_app)


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return proc_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def machine_steal() -> tuple[int, int] | None:
    try:
        return proc_stat_steal(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return proc_rss_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


# -- steps ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    target: str
    flow: str
    rate: float
    calls: int
    ok: int
    failed: int
    party_errors: int
    seconds: float
    app_cpu: float | None
    asterisk_cpu: float | None
    sipp_cpu: float
    requests: float | None
    events: float | None
    left_channels: int | None
    # % of the machine's CPU time the hypervisor gave to other guests during the step: a
    # shared host's noise, which makes steps with much of it slower for reasons of its own
    steal: float | None = None
    kind: str = "ramp"  # ramp, latency or hold
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.ok == self.calls and self.failed == 0 and self.party_errors == 0

    def per_1k(self, value: float | None) -> float | None:
        return None if value is None or not self.calls else value * 1000 / self.calls

    def per_call(self, value: float | None) -> float | None:
        return None if value is None or not self.calls else value / self.calls


@dataclass
class LatencyResult:
    target: str
    measure: str
    samples: list[float]
    calls: int
    # the machine's steal during the target's traced rounds (mean, weighted by time)
    steal: float | None = None
    # the samples of the rounds the hypervisor left nearly alone (steal <= QUIET_STEAL_PERCENT)
    quiet_samples: list[float] = field(default_factory=list)
    quiet_calls: int = 0

    @property
    def p50(self) -> float | None:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float | None:
        return percentile(self.samples, 99)


def latency_schedule(targets: Sequence[str], calls: int, rounds: int) -> list[tuple[int, str, int]]:
    """(round, target, calls) for the latency part: ``calls`` per target split into
    ``rounds`` nearly equal parts, the targets taking turns in an order that reverses every
    round (app, reference, reference, app, ...), so neither always goes first."""
    rounds = max(1, min(rounds, calls))
    schedule: list[tuple[int, str, int]] = []
    for index in range(rounds):
        part = calls // rounds + (1 if index < calls % rounds else 0)
        order = list(targets) if index % 2 == 0 else list(reversed(targets))
        schedule.extend((index + 1, name, part) for name in order)
    return [entry for entry in schedule if entry[2] > 0]


def mean_steal(steps: Sequence[StepResult]) -> float | None:
    """Steal over several steps: their steal % weighted by their length; None if unknown."""
    known = [(s.steal, s.seconds) for s in steps if s.steal is not None and s.seconds > 0]
    total = sum(seconds for _, seconds in known)
    if not known or total <= 0:
        return None
    return sum(steal * seconds for steal, seconds in known) / total


def latency_added(
    latencies: Sequence[LatencyResult], *, quiet: bool = False
) -> list[tuple[str, float | None, float | None]]:
    """Per measure taken on both targets: (measure, app p50 - reference p50, app p99 -
    reference p99): the part of the interval the app path adds over Asterisk alone. With
    ``quiet``, from the samples of the quiet rounds only."""
    by_key = {(lat.target, lat.measure): lat for lat in latencies}
    added = []
    for (target, measure), app in by_key.items():
        ref = by_key.get(("reference", measure))
        if target != "app" or ref is None:
            continue
        a, r = (app.quiet_samples, ref.quiet_samples) if quiet else (app.samples, ref.samples)
        added.append(
            (
                measure,
                _delta(percentile(a, 50), percentile(r, 50)),
                _delta(percentile(a, 99), percentile(r, 99)),
            )
        )
    return added


@dataclass
class HoldResult:
    target: str
    calls: int
    held: int
    failed: int
    app_rss_before: int | None
    app_rss_held: int | None
    asterisk_rss_before: int | None
    asterisk_rss_held: int | None

    def per_call_kb(self, before: int | None, held: int | None) -> float | None:
        if before is None or held is None or not self.held:
            return None
        return (held - before) / self.held


@dataclass
class Options:
    targets: Sequence[str] = TARGETS
    flows: Sequence[str] = FLOWS
    rates: Sequence[float] = field(default_factory=lambda: parse_rates(DEFAULT_RATES))
    calls: int = 1000
    talk_ms: int = 1000
    agent_ms: int = 500
    latency_rate: float = 20
    latency_calls: int = 200
    latency_rounds: int = LATENCY_ROUNDS
    hold_calls: int = 500
    hold_seconds: int = 30
    hold_rate: float = 50
    shipped_queues: bool = False
    keep: bool = False


@dataclass
class Report:
    machine: dict[str, str]
    options: dict[str, object]
    steps: list[StepResult] = field(default_factory=list)
    latencies: list[LatencyResult] = field(default_factory=list)
    holds: list[HoldResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, runtime: Runtime, root: Path, options: Options) -> None:
        self.runtime = runtime
        self.root = root
        self.options = options
        self.sipp = SippLauncher(runtime, root / "sipp")
        self.started = time.monotonic()
        self.targets: dict[str, Target] = {}
        # targets whose last step failed: restarted before their next step (see ready)
        self.dirty: set[str] = set()

    def say(self, text: str, *, end: str = "\n") -> None:
        print(f"[{time.monotonic() - self.started:4.0f}s] {text}", end=end, flush=True)

    # -- targets

    def start_targets(self) -> None:
        config_file = self.root / "bench.toml"
        config_file.write_text(f"[bridge]\nmax_calls = {BENCH_MAX_CALLS}\n")
        for name in self.options.targets:
            target = make_target(
                name,
                self.runtime,
                self.root,
                shipped_queues=self.options.shipped_queues,
                config_file=config_file,
            )
            self.say(
                f"starting {name}: SIP {target.stack.sip_remote}, files under {target.stack.root}"
            )
            target.start()
            self.targets[name] = target

    def ready(self, target: Target) -> None:
        """Restart ``target`` if its last step failed. An overloaded step leaves callers in
        the fallback queue ringing the agent, which the next step's SIPp agent then gets;
        the next step starts from a fresh Asterisk and app instead."""
        if target.name not in self.dirty:
            return
        self.dirty.discard(target.name)
        self.say(f"restarting {target.name} after its failed step")
        target.stop()
        target.start()

    def stop_targets(self) -> None:
        for target in self.targets.values():
            with contextlib.suppress(Exception):
                target.stop()

    # -- one step

    def run_step(
        self,
        target: Target,
        flow: str,
        rate: float,
        calls: int,
        *,
        trace: bool = False,
        hold_seconds: int | None = None,
        label: str | None = None,
        kind: str = "ramp",
        on_running: Callable[[Party], None] | None = None,
    ) -> tuple[StepResult, dict[str, Party]]:
        self.ready(target)
        stack = target.stack
        talk_ms = hold_seconds * 1000 if hold_seconds else self.options.talk_ms
        recv_timeout = RECV_TIMEOUT_MS + (hold_seconds or 0) * 1000
        timeout = calls / rate + recv_timeout / 1000 + 30
        limit = calls if hold_seconds else max(100, int(rate * 20))
        self.say(f"{target.name} {label or flow} {rate:g} calls/s: {calls} calls ...", end="")
        app_pid, ast_pid = target.app_pid, target.asterisk_pid
        before = (cpu_seconds(app_pid), cpu_seconds(ast_pid))
        steal_before = machine_steal()
        metrics_before = [target.metric(name) for name in STEP_METRICS]
        begin = time.monotonic()
        parties: dict[str, Party] = {}
        try:
            if flow == "transfer":
                parties["agent"] = self.sipp.start(
                    "agent",
                    name=f"{target.name}-{flow}-agent",
                    local_port=stack.agent_port,
                    calls=calls,
                    timeout_s=timeout,
                    pause_ms=self.options.agent_ms,
                    trace=trace,
                    recv_timeout_ms=recv_timeout,
                    uas=True,
                )
            refer_hex = ESCALATION_CONTEXT.encode().hex()
            parties["bot"] = self.sipp.start(
                "bot_refer" if flow == "transfer" else "bot_resolve",
                name=f"{target.name}-{flow}-bot",
                local_port=stack.bot_port,
                calls=calls,
                timeout_s=timeout,
                pause_ms=talk_ms,
                keys={
                    "refer_user": REFER_USER,
                    "refer_headers": f"?User-to-User={refer_hex}%3Bencoding%3Dhex",
                },
                trace=trace,
                recv_timeout_ms=recv_timeout,
                uas=True,
            )
            parties["caller"] = self.sipp.start(
                "caller",
                name=f"{target.name}-{flow}-caller",
                local_port=free_port(udp_too=True),
                remote=stack.sip_remote,
                calls=calls,
                timeout_s=timeout,
                rate=rate,
                limit=limit,
                keys={"caller_prefix": CALLER_PREFIX},
                trace=trace,
                recv_timeout_ms=recv_timeout,
            )
            if on_running is not None:
                on_running(parties["bot"])
            parties["caller"].wait(timeout + 10)
            grace = time.monotonic() + PARTY_GRACE_SECONDS
            for party in parties.values():
                party.wait(max(0.0, grace - time.monotonic()))
        finally:
            for party in parties.values():
                party.stop()
        seconds = time.monotonic() - begin
        steal = steal_percent(steal_before, machine_steal())
        left = target.drain()
        after = (cpu_seconds(app_pid), cpu_seconds(ast_pid))
        metrics_after = [target.metric(name) for name in STEP_METRICS]
        result = self._result(
            target,
            flow,
            rate,
            calls,
            parties,
            seconds=seconds,
            cpu=(_delta(after[0], before[0]), _delta(after[1], before[1])),
            metrics=[_delta(a, b) for a, b in zip(metrics_after, metrics_before, strict=True)],
            left=left,
        )
        result.kind = kind
        result.steal = steal
        if not result.passed:
            self.dirty.add(target.name)
        print(
            f" ok {result.ok} failed {result.failed}"
            + (f" (SIPp bot/agent errors {result.party_errors})" if result.party_errors else "")
            + f" in {seconds:.1f}s"
            + (f", {steal:.0f}% steal" if steal is not None else "")
            + (f"; {result.note}" if result.note else ""),
            flush=True,
        )
        return result, parties

    def _result(
        self,
        target: Target,
        flow: str,
        rate: float,
        calls: int,
        parties: Mapping[str, Party],
        *,
        seconds: float,
        cpu: tuple[float | None, float | None],
        metrics: Sequence[float | None],
        left: int | None,
    ) -> StepResult:
        requests, events, shed = metrics  # STEP_METRICS
        notes: list[str] = []
        if shed:  # shed calls never reach the bot: the bot's count shows them missing
            notes.append(f"{shed:g} new calls shed by the app's admission control")
        caller = parties["caller"].counts()
        ok = caller.successful if caller else 0
        failed = calls - ok
        party_errors = 0
        for role in ("bot", "agent"):
            party = parties.get(role)
            if party is None:
                continue
            counts = party.counts()
            if counts is None:
                notes.append(f"no statistics from the {role}")
                party_errors += calls
                continue
            # a call the party never completed is as bad as one it failed
            missing = calls - counts.successful
            party_errors += max(counts.failed, missing)
        if parties["caller"].returncode not in (0, None) and failed == 0:
            notes.append(f"caller SIPp exit code {parties['caller'].returncode}")
        if left:
            notes.append(f"{left} channels left in Asterisk after {DRAIN_TIMEOUT_SECONDS}s")
        if not target.app_alive():
            notes.append("the app process has exited")
        if failed or party_errors:
            errors = parties["caller"].errors_tail(400).strip().splitlines()
            if errors:
                notes.append("caller error: " + errors[-1][:160])
        return StepResult(
            target=target.name,
            flow=flow,
            rate=rate,
            calls=calls,
            ok=ok,
            failed=failed,
            party_errors=party_errors,
            seconds=seconds,
            app_cpu=cpu[0],
            asterisk_cpu=cpu[1],
            sipp_cpu=sum(p.cpu_seconds for p in parties.values()),
            requests=requests,
            events=events,
            left_channels=left,
            note="; ".join(notes),
        )

    # -- the three parts

    def ramp(self, report: Report) -> None:
        stopped: set[tuple[str, str]] = set()
        for rate in self.options.rates:
            for flow in self.options.flows:
                for name, target in self.targets.items():
                    if (name, flow) in stopped:
                        continue
                    if not target.app_alive():
                        stopped.add((name, flow))
                        report.notes.append(f"{name}: the app died; {flow} ramp stopped")
                        continue
                    result, _ = self.run_step(target, flow, rate, self.options.calls)
                    report.steps.append(result)
                    if not result.passed:
                        stopped.add((name, flow))

    def latency(self, report: Report) -> None:
        """The traced calls in rounds, the targets taking turns (``latency_schedule``): the
        machine's noise (another guest's CPU, steal) comes and goes within seconds, so
        each target meets about the same share of it and the app-minus-reference figures
        compare like with like. Each round is a step of its own in the report."""
        opts = self.options
        flow = "transfer" if "transfer" in opts.flows else "resolve"
        measures = ["carrier INVITE -> bot INVITE"]
        if flow == "transfer":
            measures.append("bot REFER -> agent INVITE")
        samples: dict[tuple[str, str], list[float]] = {
            (name, m): [] for name in self.targets for m in measures
        }
        quiet: dict[tuple[str, str], list[float]] = {key: [] for key in samples}
        steps: dict[str, list[StepResult]] = {name: [] for name in self.targets}
        schedule = latency_schedule(list(self.targets), opts.latency_calls, opts.latency_rounds)
        rounds = max((number for number, _, _ in schedule), default=0)
        for number, name, calls in schedule:
            result, parties = self.run_step(
                self.targets[name],
                flow,
                opts.latency_rate,
                calls,
                trace=True,
                label=f"{flow} (traced, latency round {number}/{rounds})",
                kind="latency",
            )
            report.steps.append(result)
            steps[name].append(result)
            caller, bot = parties["caller"].messages(), parties["bot"].messages()
            taken = {measures[0]: setup_delays_ms(caller, bot)}
            if "agent" in parties:
                taken[measures[-1]] = transfer_delays_ms(bot, parties["agent"].messages())
            calm = result.steal is not None and result.steal <= QUIET_STEAL_PERCENT
            for measure, values in taken.items():
                samples[(name, measure)] += values
                if calm:
                    quiet[(name, measure)] += values
        for name in self.targets:
            calls = sum(s.calls for s in steps[name])
            quiet_calls = sum(
                s.calls
                for s in steps[name]
                if s.steal is not None and s.steal <= QUIET_STEAL_PERCENT
            )
            steal = mean_steal(steps[name])
            for measure in measures:
                report.latencies.append(
                    LatencyResult(
                        name,
                        measure,
                        samples[(name, measure)],
                        calls,
                        steal,
                        quiet[(name, measure)],
                        quiet_calls,
                    )
                )

    def hold(self, report: Report) -> None:
        opts = self.options
        for name, target in self.targets.items():
            self.ready(target)
            app_pid, ast_pid = target.app_pid, target.asterisk_pid
            before = (rss_kb(app_pid), rss_kb(ast_pid))
            samples: list[tuple[int, int | None, int | None]] = []

            result, _ = self.run_step(
                target,
                "resolve",
                opts.hold_rate,
                opts.hold_calls,
                hold_seconds=opts.hold_seconds,
                label=f"hold {opts.hold_seconds}s",
                kind="hold",
                on_running=functools.partial(
                    self._sample_plateau, pids=(app_pid, ast_pid), samples=samples
                ),
            )
            report.steps.append(result)
            held = max((s[0] for s in samples), default=0)
            app_held = max((s[1] for s in samples if s[1] is not None), default=None)
            ast_held = max((s[2] for s in samples if s[2] is not None), default=None)
            report.holds.append(
                HoldResult(
                    name,
                    opts.hold_calls,
                    held,
                    result.failed + result.party_errors,
                    before[0],
                    app_held,
                    before[1],
                    ast_held,
                )
            )

    def _sample_plateau(
        self,
        bot: Party,
        *,
        pids: tuple[int | None, int | None],
        samples: list[tuple[int, int | None, int | None]],
    ) -> None:
        """Wait until the bot holds every call (or the ramp is long over), then sample RSS."""
        opts = self.options
        ramp = opts.hold_calls / opts.hold_rate
        deadline = time.monotonic() + ramp + min(opts.hold_seconds / 2, 20)
        while time.monotonic() < deadline:
            counts = bot.counts()
            if counts and counts.current >= opts.hold_calls:
                break
            if not bot.running:
                return
            time.sleep(0.5)
        for _ in range(4):
            counts = bot.counts()
            held = counts.current if counts else 0
            samples.append((held, rss_kb(pids[0]), rss_kb(pids[1])))
            time.sleep(0.5)

    def run(self) -> Report:
        report = Report(machine=machine_info(), options=_jsonable(asdict(self.options)))
        self.say("machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items()))
        self.start_targets()
        if self.options.rates and self.options.calls:
            self.ramp(report)
        if self.options.latency_calls:
            self.latency(report)
        if self.options.hold_calls:
            self.hold(report)
        return report


# -- the tables ----------------------------------------------------------------------------


def max_rates(report: Report) -> dict[tuple[str, str], tuple[float, bool]]:
    """(target, flow) -> (highest rate of the ramp with 0 failed calls, ramp ended by a failure)."""
    best: dict[tuple[str, str], tuple[float, bool]] = {}
    for step in report.steps:
        if step.kind != "ramp":
            continue
        key = (step.target, step.flow)
        rate, failed = best.get(key, (0.0, False))
        if failed:
            continue
        best[key] = (max(rate, step.rate), False) if step.passed else (rate, True)
    return best


def render_report(report: Report) -> str:
    out: list[str] = []
    out.append(
        "Steps (CPU in seconds per 1,000 calls; REST requests and events per call; steal: the"
        " share of the machine's CPU time the hypervisor gave to other guests)\n"
    )
    out.append(
        format_table(
            [
                "target",
                "step",
                "flow",
                "calls/s",
                "calls",
                "ok",
                "failed",
                "bot/agent err",
                "wall s",
                "app CPU",
                "Asterisk CPU",
                "SIPp CPU",
                "REST/call",
                "events/call",
                "steal %",
                "note",
            ],
            [
                [
                    s.target,
                    s.kind,
                    s.flow,
                    f"{s.rate:g}",
                    str(s.calls),
                    str(s.ok),
                    str(s.failed),
                    str(s.party_errors),
                    f"{s.seconds:.1f}",
                    fmt(s.per_1k(s.app_cpu), 2),
                    fmt(s.per_1k(s.asterisk_cpu), 2),
                    fmt(s.per_1k(s.sipp_cpu), 2),
                    fmt(s.per_call(s.requests), 1),
                    fmt(s.per_call(s.events), 1),
                    fmt(s.steal, 0),
                    s.note,
                ]
                for s in report.steps
            ],
        )
    )
    best = max_rates(report)
    flows = sorted({flow for _, flow in best}, key=lambda f: FLOWS.index(f) if f in FLOWS else 9)
    if flows:
        rows = []
        for flow in flows:
            cells = [flow]
            values: dict[str, float] = {}
            for name in TARGETS:
                if (name, flow) not in best:
                    cells.append("n/a")
                    continue
                rate, ended = best[(name, flow)]
                values[name] = rate
                cells.append(f"{rate:g}" + ("" if ended else " (no failure up to here)"))
            ratio = (
                values["app"] / values["reference"]
                if values.get("reference") and "app" in values
                else None
            )
            cells.append(fmt(ratio, 2))
            rows.append(cells)
        out.append("\nMax rate with 0 failed calls (calls/s)\n")
        out.append(format_table(["flow", "app", "reference", "app/reference"], rows))
    if report.latencies:
        out.append("\nLatency (ms, from SIPp message traces)\n")
        out.append(
            format_table(
                ["measure", "target", "calls matched", "p50 ms", "p99 ms", "steal %"],
                [
                    [
                        lat.measure,
                        lat.target,
                        f"{len(lat.samples)}/{lat.calls}",
                        fmt(lat.p50, 1),
                        fmt(lat.p99, 1),
                        fmt(lat.steal, 0),
                    ]
                    for lat in report.latencies
                ],
            )
        )
        added = latency_added(report.latencies)
        if added:
            out.append(
                "\nAdded by the app: app minus reference, same run (Asterisk's own part and "
                "the machine's noise are in both)\n"
            )
            out.append(
                format_table(
                    ["measure", "p50 ms", "p99 ms"],
                    [[measure, fmt(d50, 1), fmt(d99, 1)] for measure, d50, d99 in added],
                )
            )
        quiet_added = latency_added(report.latencies, quiet=True)
        out.append(
            f"\nThe same from the quiet rounds only (steal <= {QUIET_STEAL_PERCENT:g}%; a"
            " shared machine's steal comes in bursts of seconds)\n"
        )
        out.append(
            format_table(
                ["measure", "target", "calls matched", "p50 ms", "p99 ms"],
                [
                    [
                        lat.measure,
                        lat.target,
                        f"{len(lat.quiet_samples)}/{lat.quiet_calls}",
                        fmt(percentile(lat.quiet_samples, 50), 1),
                        fmt(percentile(lat.quiet_samples, 99), 1),
                    ]
                    for lat in report.latencies
                ],
            )
        )
        if quiet_added:
            out.append("\nAdded by the app, quiet rounds\n")
            out.append(
                format_table(
                    ["measure", "p50 ms", "p99 ms"],
                    [[m, fmt(d50, 1), fmt(d99, 1)] for m, d50, d99 in quiet_added],
                )
            )
    if report.holds:
        out.append("\nMemory with calls held (RSS, KB)\n")
        out.append(
            format_table(
                [
                    "target",
                    "calls held",
                    "failed",
                    "app before",
                    "app held",
                    "app KB/call",
                    "Asterisk before",
                    "Asterisk held",
                    "Asterisk KB/call",
                ],
                [
                    [
                        h.target,
                        f"{h.held}/{h.calls}",
                        str(h.failed),
                        fmt(h.app_rss_before, 0),
                        fmt(h.app_rss_held, 0),
                        fmt(h.per_call_kb(h.app_rss_before, h.app_rss_held), 1),
                        fmt(h.asterisk_rss_before, 0),
                        fmt(h.asterisk_rss_held, 0),
                        fmt(h.per_call_kb(h.asterisk_rss_before, h.asterisk_rss_held), 1),
                    ]
                    for h in report.holds
                ],
            )
        )
    for note in report.notes:
        out.append(f"\nnote: {note}")
    return "\n".join(out)


def machine_info() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count() or 0),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "cpu": model or "unknown",
    }


def _jsonable(data: Mapping[str, object]) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def report_json(report: Report) -> str:
    data = asdict(report)
    data["max_rates"] = {f"{t}/{f}": r for (t, f), r in max_rates(report).items()}
    for item in data["latencies"]:
        values = item["samples"]
        item["p50"], item["p99"] = percentile(values, 50), percentile(values, 99)
    data["latency_added"] = [
        {"measure": measure, "p50": d50, "p99": d99}
        for measure, d50, d99 in latency_added(report.latencies)
    ]
    data["latency_added_quiet_rounds"] = [
        {"measure": measure, "p50": d50, "p99": d99}
        for measure, d50, d99 in latency_added(report.latencies, quiet=True)
    ]
    return json.dumps(data, indent=2)


# -- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
        description="Call-rate, latency, CPU and memory benchmark: the app vs Asterisk alone.",
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls per ramp step (1000)")
    parser.add_argument("--rates", default=DEFAULT_RATES, help=f"calls/s ({DEFAULT_RATES})")
    parser.add_argument("--flows", default=",".join(FLOWS), help="resolve,transfer")
    parser.add_argument("--targets", default=",".join(TARGETS), help="app,reference")
    parser.add_argument("--talk-ms", type=int, default=1000, help="bot talk time (1000)")
    parser.add_argument("--agent-ms", type=int, default=500, help="agent talk time (500)")
    parser.add_argument("--latency-rate", type=float, default=20, help="calls/s (20)")
    parser.add_argument(
        "--latency-calls", type=int, default=200, help="traced calls, 0 = skip (200)"
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=LATENCY_ROUNDS,
        help=f"traced calls in this many rounds, the targets taking turns ({LATENCY_ROUNDS})",
    )
    parser.add_argument("--hold-calls", type=int, default=500, help="concurrent, 0 = skip (500)")
    parser.add_argument("--hold-seconds", type=int, default=30, help="hold time (30)")
    parser.add_argument("--hold-rate", type=float, default=50, help="calls/s to fill (50)")
    parser.add_argument(
        "--shipped-queues",
        action="store_true",
        help="keep queues.conf as shipped (ringinuse = no: one agent call at a time)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    def names(text: str, allowed: Sequence[str], what: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [c for c in chosen if c not in allowed]
        if unknown or not chosen:
            parser.error(f"--{what} takes {','.join(allowed)}, got {text!r}")
        return [a for a in allowed if a in chosen]

    try:
        rates = parse_rates(args.rates)
    except ValueError as exc:
        parser.error(str(exc))
    options = Options(
        targets=names(args.targets, TARGETS, "targets"),
        flows=names(args.flows, FLOWS, "flows"),
        rates=rates,
        calls=args.calls,
        talk_ms=args.talk_ms,
        agent_ms=args.agent_ms,
        latency_rate=args.latency_rate,
        latency_calls=args.latency_calls,
        latency_rounds=args.latency_rounds,
        hold_calls=args.hold_calls,
        hold_seconds=args.hold_seconds,
        hold_rate=args.hold_rate,
        shipped_queues=args.shipped_queues,
        keep=args.keep,
    )
    return options, args


def run_bench(options: Options, runtime: Runtime | None = None) -> tuple[Report, Path]:
    """Start the targets, run the parts, stop everything; the report and the run directory."""
    _raise_nofile()
    runtime = runtime or select_runtime()
    root = runtime.scratch_root() / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir(parents=True)
    bench = Bench(runtime, root, options)
    try:
        report = bench.run()
    finally:
        bench.stop_targets()
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
    return report, root


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (make, timeout) stops Asterisk, the app and SIPp too


def main(argv: Sequence[str] | None = None) -> int:
    options, args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report, root = run_bench(options)
    except (StackError, RuntimeUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print()
    print(render_report(report))
    if args.json:
        args.json.write_text(report_json(report))
        print(f"\nresults written to {args.json}")
    if options.keep:
        print(f"run directory kept: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
