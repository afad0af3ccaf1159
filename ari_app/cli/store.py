"""``ari-app records | report | db``: the interaction store, read or migrated."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from ari_app.cli.common import EXIT_FAILED, EXIT_USAGE, command, positive_int
from ari_app.config import Config
from ari_app.store import StoreNotReady


def add_commands(sub: Any) -> None:
    p = command(
        sub,
        "records",
        "print interaction records as JSON lines, oldest first",
        "  ari-app records --since 24h\n  ari-app records --since 2026-05-01 --limit 100\n"
        "  ari-app records --id 0b6f0c5e-...\n",
        "Print interaction records from the store as JSON lines, oldest first. Reads only: "
        "a missing store is an error, never created.",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="records started at or after WHEN: YYYY-MM-DD, an ISO date-time (both in "
        "[reports] timezone unless it has an offset) or a duration back from now (30m, "
        "24h, 7d, 2w)",
    )
    p.add_argument("--id", dest="interaction_id", help="only the record with this interaction id")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the N most recent records")
    p.set_defaults(func=_records)

    _report_parser(sub)

    db = command(
        sub,
        "db",
        "create, upgrade, inspect or downgrade the interaction store's schema",
        "  ari-app db upgrade\n  ari-app db current\n  ari-app db downgrade 0001_initial\n",
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = command(
        db_sub,
        "upgrade",
        "create the store if needed and migrate it to REVISION",
        "  ari-app db upgrade\n",
    )
    p.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    p.set_defaults(func=_db_upgrade)
    p = command(db_sub, "current", "print the store's schema revision", "  ari-app db current\n")
    p.set_defaults(func=_db_current)
    p = command(
        db_sub,
        "downgrade",
        "migrate an existing store down to REVISION",
        "  ari-app db downgrade 0001_initial\n",
    )
    p.add_argument("revision", help="target revision, e.g. 0001_initial or -1")
    p.set_defaults(func=_db_downgrade)


async def _records(config: Config, args: argparse.Namespace) -> int:
    from ari_app.reporting.periods import ReportError, timezone_named
    from ari_app.store import open_existing_store

    try:
        since = _since(args.since, timezone_named(config.reports.timezone)) if args.since else None
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = open_existing_store(config)  # [store] url: SQLite or PostgreSQL
    try:
        if args.interaction_id:
            one = store.get(args.interaction_id)
            records = [one] if one else []
        elif since is not None:
            records = store.between(since.timestamp(), math.inf)
        else:
            records = store.all()
    finally:
        store.close()
    if since is not None:
        records = [r for r in records if (r.get("started_at") or 0) >= since.timestamp()]
    if args.limit:
        records = records[-args.limit :]
    for record in records:
        print(json.dumps(record, default=str))
    if args.interaction_id and not records:
        print(f"no record with interaction id {args.interaction_id}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _since(text: str, tz: tzinfo) -> datetime:
    """``--since``: a date, a date-time or a duration back from now."""
    from ari_app.reporting.periods import ReportError, parse_duration

    if text.strip()[-1:].isalpha():
        return datetime.now(tz) - parse_duration(text, "--since")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(
            f"--since must be YYYY-MM-DD, an ISO date-time or a duration such as 24h, got {text!r}"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _report_parser(sub: Any) -> None:
    from ari_app.reporting.periods import GROUP_BYS
    from ari_app.reporting.rendering import FORMATS

    p = command(
        sub,
        "report",
        "interaction report for a period (docs/reports.md)",
        "  ari-app report                             today, as a table by day\n"
        "  ari-app report --last 7d --group-by queue  today and the six days before\n"
        "  ari-app report --last 24h --format json    yesterday and today\n"
        "  ari-app report --from 2026-05-01 --to 2026-05-31 --format csv > may.csv\n",
        "Interactions started in a period of whole days in [reports] timezone, grouped by "
        "day, bot profile or queue. The period is today unless --last or --from/--to say "
        "otherwise. Reads only: a missing store is an error, never created.",
    )
    p.add_argument(
        "--last",
        metavar="SPAN",
        help="the whole days that the last SPAN touch: 7d = today and the six days before, "
        "24h = yesterday and today (units m, h, d, w)",
    )
    p.add_argument(
        "--from",
        dest="date_from",
        metavar="YYYY-MM-DD",
        help="first day of the period (default: today)",
    )
    p.add_argument(
        "--to",
        dest="date_to",
        metavar="YYYY-MM-DD",
        help="last day of the period, included (default: today; needs --from)",
    )
    p.add_argument(
        "--group-by", choices=GROUP_BYS, default="day", help="one row per (default: day)"
    )
    p.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    p.set_defaults(func=_report)


async def _report(config: Config, args: argparse.Namespace) -> int:
    from ari_app.reporting.aggregation import report_from_store
    from ari_app.reporting.periods import Period, ReportError, last_period, timezone_named
    from ari_app.reporting.rendering import render
    from ari_app.store import open_existing_store

    try:
        tz = timezone_named(config.reports.timezone)
        today = datetime.now(tz).date().isoformat()
        if args.last and (args.date_from or args.date_to):
            raise ReportError("--last cannot be combined with --from/--to")
        if args.date_to and not args.date_from:
            raise ReportError("--to needs --from (the first day of the period)")
        if args.last:
            period = last_period(args.last, datetime.now(tz), tz)
        else:
            period = Period.parse(args.date_from or today, args.date_to or today, tz)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = open_existing_store(config)
    try:
        report = report_from_store(store, period, args.group_by)
    finally:
        store.close()
    sys.stdout.write(render(report, args.format))
    return 0


async def _db_upgrade(config: Config, args: argparse.Namespace) -> int:
    return _db_migrate(config, args.revision, upgrade=True)


def _db_migrate(config: Config, revision: str, *, upgrade: bool) -> int:
    """db upgrade (may create the store) / db downgrade (an existing SQLite file only)."""
    from ari_app.store import open_store

    if not upgrade:
        _require_sqlite_file(config)
    store = open_store(config, migrate=False)
    try:
        before = store.revision()
        verb = "upgrading" if upgrade else "downgrading"
        print(f"{verb} {store!r} from {_revision_text(before)} to {revision} ...")
        (store.upgrade if upgrade else store.downgrade)(revision)
        print(f"at {_revision_text(store.revision())}")
    finally:
        store.close()
    return 0


async def _db_current(config: Config, args: argparse.Namespace) -> int:
    from ari_app.store import head_revisions, open_store

    _require_sqlite_file(config)
    store = open_store(config, migrate=False)
    try:
        current = store.revision()
    finally:
        store.close()
    heads = head_revisions()
    state = "(head)" if current == heads else f"(this version's head: {', '.join(heads)})"
    print(f"{_revision_text(current)} {state}")
    return 0


async def _db_downgrade(config: Config, args: argparse.Namespace) -> int:
    return _db_migrate(config, args.revision, upgrade=False)


def _require_sqlite_file(config: Config) -> None:
    from ari_app.store import database_url

    url = database_url(config.store.url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise StoreNotReady(
            f"no interaction store at {url.database}: `ari-app db upgrade` creates one"
        )


def _revision_text(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "(empty: no schema)"
