"""The ``/reports`` page and the HTML part of report emails: HTML with an inline SVG chart,
both generated here, the same figures, chart and table in both.

No script, no external resource: the page works under ``default-src 'none'``. Every value
that reaches the markup goes through ``html.escape`` (escalation targets come from bots), and
names in the table's list cells are quoted as in the text table (``rendering.quoted_name``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from ari_app.reporting.aggregation import GroupStats, Report
from ari_app.reporting.periods import GROUP_BYS
from ari_app.reporting.rendering import (
    NULL_TEXT,
    TABLE_HEADERS,
    minutes_value,
    quoted_name,
    render_csv,
    render_json,
    table_cells,
)

CHART_WIDTH = 1000
CHART_HEIGHT = 320
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 60, 70, 48, 32
BAR_COLOUR = "#e8743b"
LINE_COLOUR = "#1f5fa8"
GRID_COLOUR = "#d9dde3"
TEXT_COLOUR = "#33373d"
MIN_LABEL_SPACING = 64  # pixels between two day labels on the x axis


def _nice_ceiling(value: int) -> int:
    """A round axis maximum >= value, with 4 even steps (4, 8, 20, 40, 100, ...)."""
    if value <= 4:
        return 4
    step = value / 4
    magnitude = 10 ** math.floor(math.log10(step))
    for factor in (1, 1.5, 2, 2.5, 3, 5, 10):
        nice = factor * magnitude
        if nice >= step and float(nice).is_integer():
            return int(nice * 4)
    return int(10 * magnitude * 4)


def _fmt(number: float) -> str:
    return f"{number:.1f}".rstrip("0").rstrip(".")


def chart_svg(days: Sequence[GroupStats], *, title: str = "") -> str:
    """Escalations per day (bars, left axis) and containment rate per day (line, right axis).

    A day without resolved or escalated calls has no containment rate: the line breaks there.
    """
    width, height = CHART_WIDTH, CHART_HEIGHT
    left, top = _MARGIN_LEFT, _MARGIN_TOP
    plot_w = width - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = height - _MARGIN_TOP - _MARGIN_BOTTOM
    bottom = top + plot_h
    n = max(1, len(days))
    band = plot_w / n
    escalations = [d.outcomes["escalated"] for d in days]
    y_max = _nice_ceiling(max(escalations, default=0))

    def y_count(count: float) -> float:
        return bottom - plot_h * count / y_max

    def y_rate(rate: float) -> float:
        return bottom - plot_h * rate

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title or "Containment rate and escalations per day")}" '
        f'font-family="sans-serif" font-size="12" fill="{TEXT_COLOUR}">',
        f"<title>{escape(title or 'Containment rate and escalations per day')}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    # grid and both axes' labels: 4 steps
    for i in range(5):
        y = bottom - plot_h * i / 4
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="{GRID_COLOUR}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt(y_max * i / 4)}</text>'
        )
        out.append(
            f'<text x="{left + plot_w + 8}" y="{y + 4:.1f}" text-anchor="start">{25 * i}%</text>'
        )
    out.append(
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})" fill="{BAR_COLOUR}">'
        "escalations</text>"
    )
    right_x = width - 14
    out.append(
        f'<text x="{right_x}" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(90 {right_x} {top + plot_h / 2:.1f})" fill="{LINE_COLOUR}">'
        "containment rate</text>"
    )
    # bars
    bar_w = max(1.0, band * 0.6)
    for i, (day, count) in enumerate(zip(days, escalations, strict=True)):
        if not count:
            continue
        x = left + band * i + (band - bar_w) / 2
        y = y_count(count)
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{bottom - y:.1f}" fill="{BAR_COLOUR}">'
            f"<title>{escape(day.key)}: {count} escalated</title></rect>"
        )
    # containment line, broken where a day has no rate
    segments: list[list[tuple[float, float]]] = [[]]
    points: list[tuple[float, float, GroupStats]] = []
    for i, day in enumerate(days):
        rate = day.containment_rate
        if rate is None:
            if segments[-1]:
                segments.append([])
            continue
        point = (left + band * i + band / 2, y_rate(rate))
        segments[-1].append(point)
        points.append((*point, day))
    for segment in segments:
        if len(segment) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{LINE_COLOUR}" '
                'stroke-width="2.5" stroke-linejoin="round"/>'
            )
    for x, y, day in points:
        rate = day.containment_rate or 0.0
        out.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{LINE_COLOUR}">'
            f"<title>{escape(day.key)}: containment {rate * 100:.1f}%</title></circle>"
        )
    # x axis and day labels, thinned out so they do not overlap
    out.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" '
        f'stroke="{TEXT_COLOUR}" stroke-width="1"/>'
    )
    every = max(1, math.ceil(MIN_LABEL_SPACING / band))
    for i, day in enumerate(days):
        if i % every:
            continue
        x = left + band * i + band / 2
        label = day.key[5:] if len(day.key) == 10 else day.key  # MM-DD of YYYY-MM-DD
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{escape(label)}</text>'
        )
    if not any(d.total for d in days):
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" '
            'text-anchor="middle" font-size="16">No interactions in this period</text>'
        )
    # legend
    out.append(
        f'<rect x="{left}" y="14" width="14" height="14" fill="{BAR_COLOUR}"/>'
        f'<text x="{left + 20}" y="26">Escalations per day (left axis)</text>'
        f'<line x1="{left + 250}" y1="21" x2="{left + 280}" y2="21" stroke="{LINE_COLOUR}" '
        'stroke-width="2.5"/>'
        f'<circle cx="{left + 265}" cy="21" r="4" fill="{LINE_COLOUR}"/>'
        f'<text x="{left + 288}" y="26">Containment rate per day (right axis)</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


_STYLE = """
body { font-family: sans-serif; margin: 24px 32px; color: #22262b; background: #f6f7f9; }
h1 { font-size: 22px; margin: 0 0 4px; }
.period { color: #5a6068; margin-bottom: 16px; }
form { margin: 12px 0 20px; display: flex; gap: 12px; align-items: end; flex-wrap: wrap; }
label { display: flex; flex-direction: column; font-size: 12px; color: #5a6068; gap: 2px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 18px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 10px 14px;
        min-width: 100px; }
.card .v { font-size: 22px; font-weight: bold; }
.card .k { font-size: 12px; color: #5a6068; }
.chart { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 8px;
         display: inline-block; }
.chart svg { display: block; }
table { border-collapse: collapse; background: #fff; margin-top: 18px; font-size: 13px; }
th, td { border: 1px solid #dde1e6; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; }
tr.total td { font-weight: bold; background: #eef1f5; }
.downloads a { margin-right: 16px; }
"""


def _card(label: str, value: str) -> str:
    return (
        f'<div class="card"><div class="v">{escape(value)}</div><div class="k">{label}</div></div>'
    )


def _percent(value: float | None) -> str:
    return NULL_TEXT if value is None else f"{value * 100:.1f}%"


def report_page(report: Report, daily: Report, *, token: str | None = None) -> str:
    """The whole page: a form, headline figures, the daily chart, the grouped table."""
    period = report.period
    hidden = f'<input type="hidden" name="token" value="{escape(token)}">' if token else ""
    options = "".join(
        f'<option value="{g}"{" selected" if g == report.group_by else ""}>{g}</option>'
        for g in GROUP_BYS
    )
    stem = f"botbridge-report-{period.first_day}-{period.last_day}-{report.group_by}"
    csv_href = "data:text/csv;charset=utf-8," + quote(render_csv(report))
    json_href = "data:application/json;charset=utf-8," + quote(render_json(report))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bot bridge report {escape(str(period))}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Bot bridge interaction report</h1>
<div class="period">{escape(str(period))}, grouped by {escape(report.group_by)}</div>
<form method="get" action="reports">
<label>from<input type="date" name="from" value="{period.first_day}"></label>
<label>to<input type="date" name="to" value="{period.last_day}"></label>
<label>group by<select name="group_by">{options}</select></label>
{hidden}<button type="submit">Show</button>
</form>
{report_summary(report, daily)}
<p class="downloads">Download:
<a download="{stem}.csv" href="{escape(csv_href)}">CSV</a>
<a download="{stem}.json" href="{escape(json_href)}">JSON</a></p>
</body>
</html>
"""


def report_email(report: Report, daily: Report, *, intro: str) -> str:
    """The HTML part of a report email: the page's figures, chart and table, no form and no
    links (the CSV is attached). Inline SVG and a <style> block, no external resource."""
    period = report.period
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bot bridge report {escape(str(period))}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Bot bridge interaction report</h1>
<div class="period">{escape(str(period))}, grouped by {escape(report.group_by)}</div>
<p>{escape(intro)}</p>
{report_summary(report, daily)}
</body>
</html>
"""


def report_summary(report: Report, daily: Report) -> str:
    """Headline figures, the daily chart and the grouped table: shared by page and email."""
    period = report.period
    total = report.total
    header_cells = "".join(f"<th>{escape(h)}</th>" for h in (report.group_by, *TABLE_HEADERS))
    body_rows = []
    for row in (*report.rows, total):
        cls = ' class="total"' if row is total else ""
        cells = "".join(f"<td>{escape(c)}</td>" for c in table_cells(row))
        body_rows.append(f"<tr{cls}>{cells}</tr>")
    usage = ", ".join(
        f"{escape(quoted_name(k))}: {minutes_value(v)}"
        for k, v in sorted(total.usage_minutes.items())
    )
    avg = NULL_TEXT if total.avg_bot_seconds is None else f"{total.avg_bot_seconds:.1f} s"
    return f"""<div class="cards">
{_card("interactions", str(total.total))}
{_card("containment rate", _percent(total.containment_rate))}
{_card("escalated", str(total.outcomes["escalated"]))}
{_card("bot failure rate", _percent(total.bot_failure_rate))}
{_card("abandon rate", _percent(total.abandon_rate))}
{_card("average bot time", avg)}
{_card("bot minutes (billable)", str(minutes_value(total.billable_minutes)))}
</div>
<div class="chart">
{chart_svg(daily.rows, title=f"Containment rate and escalations per day, {period}")}
</div>
<table>
<thead><tr>{header_cells}</tr></thead>
<tbody>
{"".join(body_rows)}
</tbody>
</table>
<p>Bot usage (billable minutes) by profile: {usage or NULL_TEXT}</p>"""
