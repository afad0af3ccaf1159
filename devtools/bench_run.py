"""The bench's run plan: the options, and the three parts (ramp, latency, memory hold) run
step by step against the targets, each step a set of SIPp parties measured from the host."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ari_app.config.headers import CONTEXT_KEYS
from devtools.bench_analysis import parse_rates, setup_delays_ms, steal_percent, transfer_delays_ms
from devtools.bench_host import cpu_seconds, machine_info, machine_steal, rss_kb
from devtools.bench_parties import (
    FLOWS,
    RECV_TIMEOUT_MS,
    Party,
    SippLauncher,
)
from devtools.bench_report import (
    QUIET_STEAL_PERCENT,
    HoldResult,
    LatencyResult,
    Report,
    StepResult,
    delta,
    jsonable,
    mean_steal,
)
from devtools.bench_targets import (
    BENCH_MAX_CALLS,
    DRAIN_TIMEOUT_SECONDS,
    TARGETS,
    Target,
    make_target,
)
from devtools.runtime import Runtime
from devtools.stack import free_port

DEFAULT_RATES = "25,50,100,150,200,300"
CALLER_PREFIX = "1555"  # caller numbers are 1555<SIPp call number>, unique within a run
REFER_USER = "escalation"
ESCALATION_CONTEXT = "escalate_to=agents-queue"
REQUESTS_METRIC = "botbridge_ari_requests_total"
EVENTS_METRIC = "botbridge_ari_events_total"
# new calls the app shed (admission control: fallback queue or 503 instead of the bot)
SHED_METRIC = "botbridge_calls_shed_total"
# read from the app's /metrics before and after each step, in this order (StepResult fields
# requests, events; the shed count goes into the step's note)
STEP_METRICS = (REQUESTS_METRIC, EVENTS_METRIC, SHED_METRIC)
PARTY_GRACE_SECONDS = 15
# the latency part's traced calls are placed in this many rounds per target, the targets
# taking turns (Bench.latency): a shared machine's noise changes within seconds
LATENCY_ROUNDS = 4


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
    # the default profile's carrier_headers (with verstat_header and context_keys); () = none
    carrier_headers: tuple[str, ...] = ()
    config_agents: bool = False
    external_target: bool = False
    keep: bool = False


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

    def headers_toml(self) -> str:
        """``--carrier-headers``: the default profile copies them (the load caller sends
        Diversion and a verified P-Asserted-Identity), with a verstat header and every
        context key (the default queue's live figures too)."""
        names = self.options.carrier_headers
        if not names:
            return ""
        listed = ", ".join(f'"{name}"' for name in names)
        return (
            f"[profiles.default]\ncarrier_headers = [{listed}]\n"
            f"context_keys = {json.dumps(list(CONTEXT_KEYS))}\n"
            'verstat_header = "X-Verstat"\n'
        )

    def start_targets(self) -> None:
        config_file = self.root / "bench.toml"
        config_file.write_text(f"[bridge]\nmax_calls = {BENCH_MAX_CALLS}\n" + self.headers_toml())
        for name in self.options.targets:
            target = make_target(
                name,
                self.runtime,
                self.root,
                shipped_queues=self.options.shipped_queues,
                config_file=config_file,
                config_agents=self.options.config_agents,
                external=self.options.external_target,
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
            cpu=(delta(after[0], before[0]), delta(after[1], before[1])),
            metrics=[delta(a, b) for a, b in zip(metrics_after, metrics_before, strict=True)],
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
        report = Report(machine=machine_info(), options=jsonable(asdict(self.options)))
        self.say("machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items()))
        self.start_targets()
        if self.options.rates and self.options.calls:
            self.ramp(report)
        if self.options.latency_calls:
            self.latency(report)
        if self.options.hold_calls:
            self.hold(report)
        return report
