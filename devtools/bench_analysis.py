"""Pure helpers of the benchmark: percentiles, SIPp trace correlation, SIPp statistics,
Prometheus text, /proc figures and the result tables. Nothing here starts a process."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from devtools.sipp import SipMessage

# "sip:15551@127.0.0.1:5060" in a From header: the user part is the caller number
_FROM_USER = re.compile(r"sip:([^@;>\s]+)@")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks; None if empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_stamp(text: str) -> float | None:
    """Seconds since the epoch from the time stamp SIPp writes before each traced message.

    SIPp 3.8 writes ``2026-11-23 23:09:49.442381`` (local time, microseconds) or, with
    ``-rfc3339``, ``2026-11-23T23:09:49.442381Z``; older builds write ``1732403389.442381``.
    """
    text = text.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # a stamp without a zone is local time; only differences matter, so any fixed zone works
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def caller_number(message: SipMessage) -> str | None:
    match = _FROM_USER.search(message.header("From") or "")
    return match.group(1) if match else None


def first_by(
    messages: Iterable[SipMessage], *, direction: str, method: str, key: str = "number"
) -> dict[str, float]:
    """Time of the first ``method`` request per call (retransmissions ignored).

    ``key`` is ``number`` (the From user, i.e. the caller number) or ``call-id``.
    """
    times: dict[str, float] = {}
    for msg in messages:
        if msg.direction != direction or msg.method != method:
            continue
        ident = caller_number(msg) if key == "number" else msg.header("Call-ID")
        at = parse_stamp(msg.timestamp)
        if ident is None or at is None or ident in times:
            continue
        times[ident] = at
    return times


def delays_ms(starts: Mapping[str, float], ends: Mapping[str, float]) -> list[float]:
    """End minus start, in milliseconds, for every key present in both."""
    return [(ends[k] - starts[k]) * 1000 for k in starts if k in ends]


def setup_delays_ms(caller: Sequence[SipMessage], bot: Sequence[SipMessage]) -> list[float]:
    """Carrier INVITE sent by the caller -> INVITE received by the bot, per caller number."""
    return delays_ms(
        first_by(caller, direction="sent", method="INVITE"),
        first_by(bot, direction="received", method="INVITE"),
    )


def transfer_delays_ms(bot: Sequence[SipMessage], agent: Sequence[SipMessage]) -> list[float]:
    """REFER sent by the bot -> INVITE received by the agent, per caller number.

    The bot's REFER is tied to the caller number through its dialog's INVITE (same Call-ID);
    the agent's INVITE carries the caller's number in From.
    """
    number_of_dialog: dict[str, str] = {}
    for msg in bot:
        if msg.direction == "received" and msg.method == "INVITE":
            number, call_id = caller_number(msg), msg.header("Call-ID")
            if number and call_id:
                number_of_dialog.setdefault(call_id, number)
    refers = first_by(bot, direction="sent", method="REFER", key="call-id")
    refer_by_number = {
        number_of_dialog[cid]: at for cid, at in refers.items() if cid in number_of_dialog
    }
    return delays_ms(refer_by_number, first_by(agent, direction="received", method="INVITE"))


@dataclass(frozen=True)
class SippCounts:
    """Cumulative counters of one SIPp run, from its -trace_stat file."""

    created: int
    successful: int
    failed: int
    current: int

    @property
    def total(self) -> int:
        return self.successful + self.failed


def parse_sipp_stat(text: str) -> SippCounts | None:
    """The last row of a SIPp ``-trace_stat`` CSV (``;`` separated); None if it has no row."""
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=";") if row]
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    if last == header:
        return None
    values = dict(zip(header, last, strict=False))

    def number(name: str) -> int:
        try:
            return int(float(values.get(name) or 0))
        except ValueError:
            return 0

    return SippCounts(
        created=number("TotalCallCreated"),
        successful=number("SuccessfulCall(C)"),
        failed=number("FailedCall(C)"),
        current=number("CurrentCall"),
    )


def parse_screen_counts(text: str) -> SippCounts | None:
    """Fallback: "Successful call" / "Failed call" from a SIPp screen dump (-trace_screen)."""

    def last(label: str) -> int | None:
        found = re.findall(rf"^\s*{label}\s*\|\s*\d+\s*\|\s*(\d+)", text, re.MULTILINE)
        return int(found[-1]) if found else None

    ok, failed = last("Successful call"), last("Failed call")
    if ok is None or failed is None:
        return None
    return SippCounts(created=ok + failed, successful=ok, failed=failed, current=0)


def prometheus_total(text: str, name: str) -> float | None:
    """Sum of every sample of ``name`` (all label sets) in Prometheus text; None if absent."""
    total, seen = 0.0, False
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)", re.MULTILINE)
    for match in pattern.finditer(text):
        try:
            total += float(match.group(2))
        except ValueError:
            continue
        seen = True
    return total if seen else None


def proc_cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat."""
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = stat_text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(fields[11]) + int(fields[12])


def proc_stat_steal(stat_text: str) -> tuple[int, int]:
    """(all ticks, steal ticks) of the machine from the text of /proc/stat: the time the
    hypervisor gave this virtual machine's CPUs to someone else is in ``steal``."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time
            # is already counted in user and nice
            ticks = [int(v) for v in fields[1:9]]
            return sum(ticks), ticks[7] if len(ticks) > 7 else 0
    raise ValueError("no cpu line in /proc/stat")


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the machine's CPU time stolen by the hypervisor between two readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return 100.0 * (after[1] - before[1]) / (after[0] - before[0])


def proc_rss_kb(status_text: str) -> int | None:
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status_text, re.MULTILINE)
    return int(match.group(1)) if match else None


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError(f"rates must be positive numbers separated by commas, got {text!r}")
    return rates


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if digits == 0:
        return f"{value:.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so that it also reads well in a terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a table written by format_table, as dicts keyed by the header cells."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        return []

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    headers = cells(lines[0])
    return [dict(zip(headers, cells(line), strict=False)) for line in lines[2:]]
