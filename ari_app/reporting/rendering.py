"""A report as text (a terminal, an email body), CSV and JSON: the same figures in each.

``report_html.py`` renders the HTML page and email from the same cells (``table_cells``).
Names in a report's list cells (escalation targets, which come from the bots, and profiles)
are written bare only when they are plain (``PLAIN_NAME``); any other name is written as a
JSON string, so ``billing=9999;sales`` reads as one name (``"billing=9999;sales"=2``) and
never as two figures. CSV cells go through the ``csv`` module (which quotes the cell), HTML
cells through ``html.escape``, JSON keeps names as object keys.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ari_app.reporting.aggregation import GroupStats, Report
from ari_app.reporting.figures import NO_VALUE, OUTCOME_COLUMNS
from ari_app.reporting.periods import ReportError

FORMATS = ("table", "csv", "json")
NULL_TEXT = "-"  # a rate or average that is undefined (nothing to divide by), in tables
# a name written without quotes in a list cell: the characters a bot's escalate_to keeps
# after safe_value (ari_app/sip/uui.py), the space excepted
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:@+/-]+")
# spreadsheet programs run a cell starting with one of these as a formula
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_SEPARATOR = ";"  # between name=value pairs in one CSV cell
TEXT_SEPARATOR = " "  # the same in the text table


def quoted_name(name: str) -> str:
    """``name`` bare when plain (or our own ``(none)``), else a JSON string."""
    if name == NO_VALUE or PLAIN_NAME.fullmatch(name):
        return name
    return json.dumps(name, ensure_ascii=False)


def minutes_value(minutes: float) -> int | float:
    """Whole minutes as an int, otherwise to the hundredth (6-second billing gives 1.3)."""
    rounded = round(minutes, 2)
    return int(rounded) if rounded.is_integer() else rounded


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _interval(value: tuple[float, float] | None) -> list[float] | None:
    return None if value is None else [round(value[0], 4), round(value[1], 4)]


def _interval_text(value: tuple[float, float] | None) -> str:
    if value is None:
        return NULL_TEXT
    return f"{value[0] * 100:.0f}-{value[1] * 100:.0f}%"


def _ranked(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _pairs(counts: Mapping[str, int], separator: str) -> str:
    return separator.join(f"{quoted_name(name)}={count}" for name, count in _ranked(counts))


def _usage(usage: Mapping[str, float], separator: str) -> str:
    return separator.join(
        f"{quoted_name(name)}={minutes_value(m)}" for name, m in sorted(usage.items())
    )


def _percent(value: float | None) -> str:
    return NULL_TEXT if value is None else f"{value * 100:.1f}%"


def _number(value: float | None, digits: int) -> str:
    return NULL_TEXT if value is None else f"{value:.{digits}f}"


# -- JSON ----------------------------------------------------------------------------------


def group_dict(row: GroupStats) -> dict[str, Any]:
    return {
        "key": row.key,
        "total": row.total,
        "outcomes": dict(row.outcomes),
        "containment_rate": _round(row.containment_rate, 4),
        "containment_ci95": _interval(row.containment_ci95),
        "bot_failure_rate": _round(row.bot_failure_rate, 4),
        "first_bot_failures": row.first_bot_failures,
        "first_bot_failure_rate": _round(row.first_bot_failure_rate, 4),
        "abandon_rate": _round(row.abandon_rate, 4),
        "queue_attempts": row.queue_attempts,
        "queue_answered_rate": _round(row.queue_answered_rate, 4),
        "avg_speed_of_answer_seconds": _round(row.avg_speed_of_answer, 1),
        "queue_abandon_rate": _round(row.queue_abandon_rate, 4),
        "escalation_success_rate": _round(row.escalation_success_rate, 4),
        "escalation_targets": dict(_ranked(row.escalation_targets)),
        "verstat": dict(_ranked(row.verstat)),
        "avg_bot_seconds": _round(row.avg_bot_seconds, 1),
        "bot_seconds": round(row.bot_seconds, 1),
        "billable_minutes": minutes_value(row.billable_minutes),
        "usage_minutes_by_profile": {
            k: minutes_value(v) for k, v in sorted(row.usage_minutes.items())
        },
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "from": report.period.first_day.isoformat(),
        "to": report.period.last_day.isoformat(),
        "timezone": report.period.tz_name,
        "group_by": report.group_by,
        "rows": [group_dict(row) for row in report.rows],
        "total": group_dict(report.total),
    }


def render_json(report: Report) -> str:
    """The report as JSON; undefined rates and averages are ``null``."""
    return json.dumps(report_dict(report), indent=2) + "\n"


# -- CSV -----------------------------------------------------------------------------------


def csv_columns(group_by: str) -> list[str]:
    return [
        group_by,
        "total",
        *OUTCOME_COLUMNS,
        "containment_rate",
        "containment_ci95_low",
        "containment_ci95_high",
        "bot_failure_rate",
        "first_bot_failures",
        "first_bot_failure_rate",
        "abandon_rate",
        "queue_attempts",
        "queue_answered_rate",
        "avg_speed_of_answer_seconds",
        "queue_abandon_rate",
        "escalation_success_rate",
        "avg_bot_seconds",
        "bot_seconds",
        "billable_minutes",
        "escalation_targets",
        "usage_minutes_by_profile",
        "verstat",
    ]


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # escalation targets come from the bots: never let a spreadsheet evaluate one
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def render_csv(report: Report) -> str:
    """One row per group, then the ``(total)`` row; undefined rates are empty cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(csv_columns(report.group_by))
    for row in (*report.rows, report.total):
        writer.writerow(
            _csv_cell(v)
            for v in (
                row.key,
                row.total,
                *(row.outcomes[o] for o in OUTCOME_COLUMNS),
                _round(row.containment_rate, 4),
                *(_interval(row.containment_ci95) or (None, None)),
                _round(row.bot_failure_rate, 4),
                row.first_bot_failures,
                _round(row.first_bot_failure_rate, 4),
                _round(row.abandon_rate, 4),
                row.queue_attempts,
                _round(row.queue_answered_rate, 4),
                _round(row.avg_speed_of_answer, 1),
                _round(row.queue_abandon_rate, 4),
                _round(row.escalation_success_rate, 4),
                _round(row.avg_bot_seconds, 1),
                round(row.bot_seconds, 1),
                minutes_value(row.billable_minutes),
                _pairs(row.escalation_targets, CSV_SEPARATOR),
                _usage(row.usage_minutes, CSV_SEPARATOR),
                _pairs(row.verstat, CSV_SEPARATOR),
            )
        )
    return out.getvalue()


# -- text ----------------------------------------------------------------------------------

TABLE_HEADERS = (
    "total",
    "resolved",
    "escalated",
    "bot_failed",
    "abandoned",
    "error",
    "overload",
    "bypass",
    "escal_failed",
    "in_prog",
    "contain",
    "contain_95ci",
    "bot_fail",
    "1st_bot_fail",
    "abandon",
    "q_answered",
    "asa_s",
    "q_abandon",
    "escal_ok",
    "avg_bot_s",
    "bot_min",
    "escalation targets",
)


def table_cells(row: GroupStats) -> list[str]:
    """One row of the text table (and of the HTML tables), as text cells."""
    return [
        row.key,
        str(row.total),
        *(str(row.outcomes[o]) for o in OUTCOME_COLUMNS),
        _percent(row.containment_rate),
        _interval_text(row.containment_ci95),
        _percent(row.bot_failure_rate),
        _percent(row.first_bot_failure_rate),
        _percent(row.abandon_rate),
        _percent(row.queue_answered_rate),
        _number(row.avg_speed_of_answer, 1),
        _percent(row.queue_abandon_rate),
        _percent(row.escalation_success_rate),
        _number(row.avg_bot_seconds, 1),
        str(minutes_value(row.billable_minutes)),
        _pairs(row.escalation_targets, TEXT_SEPARATOR) or NULL_TEXT,
    ]


def usage_text(row: GroupStats) -> str:
    """Billable minutes by profile, for the line under a table."""
    return _usage(row.usage_minutes, ", ") or NULL_TEXT


def render_table(report: Report) -> str:
    """Fixed-width text for a terminal or an email body."""
    header = [report.group_by, *TABLE_HEADERS]
    lines = [table_cells(row) for row in (*report.rows, report.total)]
    widths = [max(len(r[i]) for r in (header, *lines)) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        # first and last columns are text (left-aligned), the figures are right-aligned
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        parts.append(cells[-1])
        return "  ".join(parts).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    body = [fmt(header), rule, *(fmt(c) for c in lines[:-1]), rule, fmt(lines[-1])]
    return (
        f"Interaction report {report.period}, grouped by {report.group_by}\n\n"
        + "\n".join(body)
        + f"\n\nBot usage (billable minutes) by profile: {usage_text(report.total)}\n"
    )


def render(report: Report, fmt: str) -> str:
    if fmt == "table":
        return render_table(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    raise ReportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
