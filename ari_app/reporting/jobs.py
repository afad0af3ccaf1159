"""What a report worker process runs: read a period's records, build, render.

The HTTP server (``web.py``) hands each report request to a pool of worker *processes*
(``[http] max_concurrent_reports``). Neither reading tens of thousands of records nor
summing them then holds the interpreter lock of the process whose event loop reads ARI
events, and a garbage collection over a large report's objects pauses only the worker
(docs/decisions.md says why processes and not threads). Everything a job carries is
picklable: the store's URL, the period, the grouping, the format; the worker opens the
store itself, once per process.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ari_app.records import Record
from ari_app.reporting.aggregation import build_report, records_between
from ari_app.reporting.periods import Period
from ari_app.reporting.rendering import render_csv, render_json
from ari_app.reporting.report_html import report_page
from ari_app.store import InteractionStore

# the records started in [start_ts, end_ts): called in a report worker process (picklable)
Records = Callable[[float, float], Sequence[Record]]
PAGE = "page"  # the /reports HTML page; "csv" and "json" are the downloads
JOB_FORMATS = ("csv", "json", PAGE)


def worker_started() -> None:
    """In each worker process: Ctrl-C (SIGINT to the process group) is the app's to handle;
    the app stops its workers itself when it shuts down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class StoreRecords:
    """A period's records from the store at ``url`` (a database URL, password included)."""

    url: str

    def __repr__(self) -> str:  # the URL may hold a password
        return "StoreRecords(...)"

    def __call__(self, start_ts: float, end_ts: float) -> list[Record]:
        return records_between(_store_at(self.url), start_ts, end_ts)


@functools.cache
def _store_at(url: str) -> InteractionStore:
    """One store per worker process and URL; never migrated (the app did that)."""
    return InteractionStore(url, migrate=False)


def store_records(store: InteractionStore) -> StoreRecords:
    return StoreRecords(store.url.render_as_string(hide_password=False))


@dataclass(frozen=True)
class ReportJob:
    """One report request, run by ``ReportJob()`` in a worker: the rendered text."""

    records: Records
    period: Period
    group_by: str
    fmt: str  # one of JOB_FORMATS
    token: str | None = None  # the page's form keeps it (a browser sends no header)

    def __repr__(self) -> str:  # the token and the store URL stay out of logs
        return f"ReportJob({self.period}, {self.group_by}, {self.fmt})"

    def __call__(self) -> str:
        records = self.records(self.period.start_ts, self.period.end_ts)
        report = build_report(records, self.period, self.group_by)
        if self.fmt == "csv":
            return render_csv(report)
        if self.fmt == "json":
            return render_json(report)
        daily = report if self.group_by == "day" else build_report(records, self.period, "day")
        return report_page(report, daily, token=self.token)
