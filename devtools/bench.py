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

This module is the command line; the bench's parts, by concern: ``bench_run`` (options and
the run plan: ramp, latency, hold), ``bench_targets`` (app and reference), ``bench_parties``
(the SIPp caller, bot and agent, started through ``devtools.sipp.SippCommand``),
``bench_host`` (CPU, steal and memory from /proc), ``bench_report`` (the figures, tables and
JSON) and ``bench_analysis`` (pure parsing and statistics).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.bench_analysis import parse_rates
from devtools.bench_host import raise_nofile
from devtools.bench_parties import FLOWS
from devtools.bench_report import Report, render_report, report_json
from devtools.bench_run import DEFAULT_RATES, LATENCY_ROUNDS, Bench, Options
from devtools.bench_targets import TARGETS
from devtools.runtime import Runtime, RuntimeUnavailable, select_runtime
from devtools.stack import StackError


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
    parser.add_argument(
        "--carrier-headers",
        default="",
        help="the app's default profile copies these caller headers to the bot, with its "
        "verstat header and context keys (e.g. Diversion,P-Asserted-Identity; none)",
    )
    parser.add_argument(
        "--config-agents",
        action="store_true",
        help="the agent pool as [queues] and [agents] of the configuration (50 agents, "
        "each its own endpoint) instead of member lines edited into queues.conf",
    )
    parser.add_argument(
        "--external-target",
        action="store_true",
        help="the app's escalations go to an [external_targets] entry whose trunk is the "
        "SIPp agent (one contact for many agents); the reference keeps its queue",
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
        carrier_headers=tuple(h.strip() for h in args.carrier_headers.split(",") if h.strip()),
        config_agents=args.config_agents,
        external_target=args.external_target,
        keep=args.keep,
    )
    return options, args


def run_bench(options: Options, runtime: Runtime | None = None) -> tuple[Report, Path]:
    """Start the targets, run the parts, stop everything; the report and the run directory."""
    raise_nofile()
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
