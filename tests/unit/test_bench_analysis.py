"""The benchmark's pure helpers: percentiles, trace correlation, SIPp and /proc parsing."""

from __future__ import annotations

import pytest

from devtools.bench_analysis import (
    format_table,
    parse_rates,
    parse_screen_counts,
    parse_sipp_stat,
    parse_stamp,
    parse_table,
    percentile,
    proc_cpu_ticks,
    proc_rss_kb,
    proc_stat_steal,
    prometheus_total,
    setup_delays_ms,
    steal_percent,
    transfer_delays_ms,
)
from devtools.bench_report import LatencyResult, StepResult, latency_added, mean_steal
from devtools.bench_run import latency_schedule
from devtools.bench_targets import agent_pool
from devtools.sipp import parse_trace


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_percentile_ignores_input_order() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2


def test_parse_stamp_formats_and_microseconds() -> None:
    rfc = parse_stamp("2026-12-01T10:37:34.721336Z")
    plain = parse_stamp("2026-12-01 10:37:34.721836")
    assert rfc is not None and plain is not None
    assert (plain - rfc) * 1000 == pytest.approx(0.5, abs=1e-3)  # double precision near 1.8e9 s
    assert parse_stamp("1796121454.721336") == pytest.approx(1796121454.721336)
    assert parse_stamp("") is None
    assert parse_stamp("not a time") is None


def _msg(stamp: str, direction: str, first_line: str, headers: str) -> str:
    return (
        f"----------------------------------------------- {stamp}\n"
        f"UDP message {direction} [100] bytes:\n\n{first_line}\n{headers}\nContent-Length: 0\n\n"
    )


CALLER = "".join(
    [
        _msg(
            "2026-12-01T10:00:00.000000Z",
            "sent",
            "INVITE sip:5551000@127.0.0.1:5060 SIP/2.0",
            'From: "Caller" <sip:15551@127.0.0.1:4000>;tag=a\nCall-ID: 1-1@127.0.0.1',
        ),
        # a retransmission must not move the start
        _msg(
            "2026-12-01T10:00:00.500000Z",
            "sent",
            "INVITE sip:5551000@127.0.0.1:5060 SIP/2.0",
            'From: "Caller" <sip:15551@127.0.0.1:4000>;tag=a\nCall-ID: 1-1@127.0.0.1',
        ),
        _msg(
            "2026-12-01T10:00:00.100000Z",
            "sent",
            "INVITE sip:5551000@127.0.0.1:5060 SIP/2.0",
            'From: "Caller" <sip:15552@127.0.0.1:4000>;tag=b\nCall-ID: 2-1@127.0.0.1',
        ),
    ]
)
BOT = "".join(
    [
        _msg(
            "2026-12-01T10:00:00.004000Z",
            "received",
            "INVITE sip:voicebot@127.0.0.1:5080 SIP/2.0",
            'From: "Caller" <sip:15551@127.0.0.1>;tag=x\nCall-ID: bot-1',
        ),
        _msg(
            "2026-12-01T10:00:00.110000Z",
            "received",
            "INVITE sip:voicebot@127.0.0.1:5080 SIP/2.0",
            'From: "Caller" <sip:15552@127.0.0.1>;tag=y\nCall-ID: bot-2',
        ),
        _msg(
            "2026-12-01T10:00:01.004000Z",
            "sent",
            "REFER sip:asterisk@127.0.0.1:5060 SIP/2.0",
            "From: <sip:voicebot@127.0.0.1:5080>;tag=t1\nCall-ID: bot-1",
        ),
    ]
)
AGENT = _msg(
    "2026-12-01T10:00:01.007500Z",
    "received",
    "INVITE sip:agent1@127.0.0.1:5090 SIP/2.0",
    'From: "Caller" <sip:15551@127.0.0.1>;tag=z\nCall-ID: agent-1',
)


def test_setup_delay_per_caller_number() -> None:
    delays = setup_delays_ms(parse_trace(CALLER), parse_trace(BOT))
    assert sorted(round(d, 3) for d in delays) == [4.0, 10.0]


def test_transfer_delay_ties_refer_to_the_caller_through_the_bot_dialog() -> None:
    delays = transfer_delays_ms(parse_trace(BOT), parse_trace(AGENT))
    assert [round(d, 3) for d in delays] == [3.5]


STAT_CSV = (
    "StartTime;LastResetTime;CurrentTime;TotalCallCreated;CurrentCall;"
    "SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C)\n"
    "t0;t0;t1;10;10;0;0;0;0\n"
    "t0;t1;t2;1000;3;5;995;0;2\n"
)


def test_sipp_stat_last_row() -> None:
    counts = parse_sipp_stat(STAT_CSV)
    assert counts is not None
    assert (counts.created, counts.successful, counts.failed, counts.current) == (1000, 995, 2, 3)
    assert counts.total == 997
    assert parse_sipp_stat(STAT_CSV.splitlines()[0]) is None


def test_sipp_screen_counts() -> None:
    screen = (
        "  Successful call        |        0                  |       19                 \n"
        "  Failed call            |        0                  |        1                 \n"
    )
    counts = parse_screen_counts(screen)
    assert counts is not None and (counts.successful, counts.failed) == (19, 1)
    assert parse_screen_counts("nothing") is None


def test_prometheus_total_sums_label_sets() -> None:
    text = (
        "# HELP botbridge_ari_requests_total ARI requests\n"
        "# TYPE botbridge_ari_requests_total counter\n"
        'botbridge_ari_requests_total{method="POST",status="204"} 12.0\n'
        'botbridge_ari_requests_total{method="GET",status="200"} 3.0\n'
        'botbridge_ari_requests_created{method="GET"} 1.7e9\n'
        "botbridge_ari_events_total 40\n"
    )
    assert prometheus_total(text, "botbridge_ari_requests_total") == 15
    assert prometheus_total(text, "botbridge_ari_events_total") == 40
    assert prometheus_total(text, "botbridge_missing_total") is None


def test_proc_parsing() -> None:
    stat = "1234 (python -m x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0"
    assert proc_cpu_ticks(stat) == 325
    assert proc_rss_kb("Name:\tpython\nVmRSS:\t   70408 kB\n") == 70408
    assert proc_rss_kb("Name:\tzombie\n") is None


def test_table_round_trip_and_rates() -> None:
    table = format_table(["flow", "app", "reference"], [["resolve", "50", "300"]])
    assert parse_table(table) == [{"flow": "resolve", "app": "50", "reference": "300"}]
    assert parse_rates("25, 50,100") == [25, 50, 100]
    with pytest.raises(ValueError):
        parse_rates("10,-1")


def test_bench_queues_are_a_pool_of_members_rung_in_use() -> None:
    shipped = (
        "[agents-queue]\nstrategy = ringall\nringinuse = no\nmember => PJSIP/agent1\n"
        "[billing-queue]\nstrategy = ringall\nringinuse = no\nmember => PJSIP/agent1\n"
    )
    pool = agent_pool(shipped, agents=3)
    assert "ringinuse = no" not in pool and pool.count("ringinuse = yes") == 2
    assert "ringall" not in pool and pool.count("strategy = rrmemory") == 2
    members = [line for line in pool.splitlines() if line.startswith("member")]
    assert members[:3] == [
        f"member => PJSIP/a{n}@agent1,0,agent-{n},PJSIP/agent1" for n in (1, 2, 3)
    ]
    assert len(members) == 6 and "member => PJSIP/agent1\n" not in pool


def test_latency_added_is_app_minus_reference_per_measure() -> None:
    setup, refer = "carrier INVITE -> bot INVITE", "bot REFER -> agent INVITE"
    app = [float(n) for n in range(1, 101)]  # p50 50.5, p99 99.01
    ref = [n / 2 for n in range(1, 101)]  # p50 25.25, p99 49.505
    results = [
        LatencyResult("app", setup, app, 100),
        LatencyResult("reference", setup, ref, 100),
        LatencyResult("app", refer, app, 100),  # no reference measure: nothing added
    ]
    ((measure, d50, d99),) = latency_added(results)
    assert measure == setup
    assert d50 == pytest.approx(50.5 - 25.25)
    assert d99 == pytest.approx(99.01 - 49.505)
    assert latency_added([LatencyResult("app", setup, [], 0)]) == []


def test_latency_added_from_the_quiet_rounds_uses_their_samples_only() -> None:
    setup = "carrier INVITE -> bot INVITE"
    noisy = [float(n) for n in range(1, 101)]
    app = LatencyResult("app", setup, noisy, 100, 20.0, [4.0, 6.0], 2)
    ref = LatencyResult("reference", setup, [1.0] * 100, 100, 3.0, [1.0, 3.0], 2)
    ((_, d50, d99),) = latency_added([app, ref], quiet=True)
    assert d50 == pytest.approx(5.0 - 2.0)
    assert d99 == pytest.approx((4.0 + 2.0 * 0.99) - (1.0 + 2.0 * 0.99))
    ((_, all50, _),) = latency_added([app, ref])
    assert all50 == pytest.approx(50.5 - 1.0)
    # no quiet round on one side: nothing to compare
    app_only_noisy = LatencyResult("app", setup, noisy, 100, 20.0, [], 0)
    assert latency_added([app_only_noisy, ref], quiet=True) == [(setup, None, None)]


def test_latency_rounds_alternate_the_targets_and_split_the_calls() -> None:
    schedule = latency_schedule(["app", "reference"], 10, 4)
    assert schedule == [
        (1, "app", 3),
        (1, "reference", 3),
        (2, "reference", 3),
        (2, "app", 3),
        (3, "app", 2),
        (3, "reference", 2),
        (4, "reference", 2),
        (4, "app", 2),
    ]
    for target in ("app", "reference"):
        assert sum(calls for _, name, calls in schedule if name == target) == 10
    # never more rounds than calls, at least one round, one target alone
    assert latency_schedule(["app", "reference"], 2, 4) == [
        (1, "app", 1),
        (1, "reference", 1),
        (2, "reference", 1),
        (2, "app", 1),
    ]
    assert latency_schedule(["reference"], 5, 0) == [(1, "reference", 5)]


def _step(seconds: float, steal: float | None) -> StepResult:
    return StepResult(
        "app", "transfer", 20, 10, 10, 0, 0, seconds, None, None, 0.0, None, None, None, steal
    )


def test_steal_of_several_rounds_is_weighted_by_their_length() -> None:
    assert mean_steal([_step(10, 30.0), _step(30, 10.0)]) == pytest.approx(15.0)
    # a round whose steal is unknown does not count; none known: unknown
    assert mean_steal([_step(10, 30.0), _step(30, None)]) == pytest.approx(30.0)
    assert mean_steal([_step(10, None)]) is None
    assert mean_steal([]) is None


def test_steal_is_read_from_the_machine_cpu_line() -> None:
    stat = "cpu  100 5 50 800 10 1 4 30 7 0\ncpu0 50 2 25 400 5 0 2 15 0 0\nintr 12345\n"
    total, steal = proc_stat_steal(stat)
    assert (total, steal) == (1000, 30)  # guest time (7) is inside user already
    later = proc_stat_steal("cpu  150 5 60 900 10 1 4 70 7 0\n")
    assert steal_percent((total, steal), later) == pytest.approx(100 * 40 / 200)
    assert steal_percent(None, later) is None
    assert steal_percent(later, later) is None  # no time passed
    with pytest.raises(ValueError):
        proc_stat_steal("intr 1\n")
