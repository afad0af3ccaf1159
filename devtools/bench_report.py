"""The bench's figures: what a step, a latency measure and a memory hold found, the tables
``make bench`` prints and the JSON it writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from devtools.bench_analysis import fmt, format_table, percentile
from devtools.bench_parties import FLOWS
from devtools.bench_targets import TARGETS

# a latency round with at most this much steal (%) counts as quiet: the report gives the
# figures of the quiet rounds beside those of all rounds (steal comes in bursts of seconds)
QUIET_STEAL_PERCENT = 5.0


def delta(after: float | None, before: float | None) -> float | None:
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
                delta(percentile(a, 50), percentile(r, 50)),
                delta(percentile(a, 99), percentile(r, 99)),
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
class Report:
    machine: dict[str, str]
    options: dict[str, object]
    steps: list[StepResult] = field(default_factory=list)
    latencies: list[LatencyResult] = field(default_factory=list)
    holds: list[HoldResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def jsonable(data: Mapping[str, object]) -> dict[str, object]:
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
