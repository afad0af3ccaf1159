"""`make bench` in smoke mode: the harness's whole code path against the dialplan-only
reference configuration (no app), a handful of calls. Figures are printed, not asserted;
what is asserted is that the calls succeed and that the harness read them back."""

from __future__ import annotations

import pytest

from devtools.bench import run_bench
from devtools.bench_analysis import parse_table
from devtools.bench_report import QUIET_STEAL_PERCENT, render_report
from devtools.bench_run import Options
from devtools.runtime import Runtime

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def test_bench_smoke_on_the_reference_configuration(runtime: Runtime) -> None:
    options = Options(
        targets=["reference"],
        flows=["resolve"],
        rates=[10],
        calls=20,
        talk_ms=500,
        latency_rate=10,
        latency_calls=20,
        latency_rounds=2,
        hold_calls=0,
    )
    report, _ = run_bench(options, runtime)
    text = render_report(report)
    print(text)

    ramp = [s for s in report.steps if s.kind == "ramp"]
    assert [(s.target, s.flow, s.calls, s.ok, s.failed) for s in ramp] == [
        ("reference", "resolve", 20, 20, 0)
    ], text
    assert all(s.passed for s in report.steps), text
    assert ramp[0].asterisk_cpu is not None and ramp[0].app_cpu is None
    # the machine's steal time is read from /proc/stat for every step
    assert all(s.steal is not None and 0 <= s.steal <= 100 for s in report.steps), text

    # the traced calls ran in two rounds of 10; every one was matched from the caller's
    # trace to the bot's
    latency = [s for s in report.steps if s.kind == "latency"]
    assert [(s.target, s.calls, s.ok) for s in latency] == [("reference", 10, 10)] * 2, text
    (setup,) = report.latencies
    assert len(setup.samples) == 20 and setup.calls == 20, text
    assert setup.steal is not None and 0 <= setup.steal <= 100, text
    # the quiet rounds' samples are those of the rounds with little steal, a part of all
    quiet_rounds = [s for s in latency if s.steal is not None and s.steal <= QUIET_STEAL_PERCENT]
    assert setup.quiet_calls == sum(s.calls for s in quiet_rounds), text
    assert len(setup.quiet_samples) == setup.quiet_calls, text
    assert setup.p50 is not None and setup.p99 is not None
    assert 0 < setup.p50 <= setup.p99 < 5000, text

    # the printed tables read back
    tables = text.split("\n\n")
    max_rate = next(t for t in tables if t.startswith("| flow"))
    assert parse_table(max_rate) == [
        {
            "flow": "resolve",
            "app": "n/a",
            "reference": "10 (no failure up to here)",
            "app/reference": "n/a",
        }
    ]
