"""ari-app: run the bot bridge's Stasis application, inspect a live Asterisk through ARI,
read the interaction store (records, reports) and manage its schema.

Every command reads the same configuration as the app: the built-in defaults, then the TOML
file named by --config or $BOTBRIDGE_CONFIG, then BOTBRIDGE_* environment variables
(docs/configuration.md). Run `ari-app COMMAND --help` for a command's options and examples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.exc import SQLAlchemyError

from ari_app.ari import AriError, AriRest, Event
from ari_app.calls.logcontext import CallFields
from ari_app.config import LOG_LEVELS, Config, ConfigError, load_config, mask_url
from ari_app.connect import ari_rest, event_stream
from ari_app.store import StoreNotReady

# variables shown by `ari-app channels`: the ones the bridge sets and reads
SHOWN_VARIABLES = (
    "BOTBRIDGE_INTERACTION_ID",
    "BOTBRIDGE_OUTCOME",
    "BOTBRIDGE_QUEUE",
    "BOTBRIDGE_ESCALATE_TO",
    "BOTBRIDGE_ERROR",
    "BOTBRIDGE_CONTEXT",
)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on Linux): the same asyncio API with less
    CPU per event and per request (docs/performance.md); else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


EXAMPLES = """\
examples:
  ari-app run --log-level DEBUG            run the app (Asterisk must be up)
  ari-app check-config                     show the effective configuration, secrets masked
  ari-app report --last 7d                 this week's interaction report
  ari-app records --since 24h --limit 20   the latest interaction records as JSON lines
  ari-app db upgrade                       create or upgrade the interaction store
  ari-app channels                         live channels with the bridge's variables
"""
# exit statuses: 1 = the command failed (Asterisk or the store said no), 2 = bad usage or
# configuration, 130 = interrupted
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_LOG_FIELDS = "%(levelname)s %(name)s %(message)s"  # plus an ISO 8601 UTC "timestamp"
# libraries whose INFO lines are noise to an operator (Alembic's plugin and context set-up;
# the store logs its own line when it migrates)
QUIET_LOGGERS = ("alembic",)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config, args)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return int(runner.run(args.func(config, args)) or 0)
    except (AriError, StoreNotReady, SQLAlchemyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def configure_logging(config: Config, args: argparse.Namespace) -> None:
    """``run`` logs at ``[logging] level`` (or --log-level) in ``[logging] format``; the other
    commands print their results and show only warnings (-v: everything), so no library's
    INFO lines (Alembic's migration steps) reach the terminal."""
    if args.command == "run":
        level = args.log_level or ("DEBUG" if args.verbose else config.logging.level)
    else:
        level = "DEBUG" if args.verbose else "WARNING"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallFields(config.store.node))
    if config.logging.format == "json":
        handler.setFormatter(
            JsonFormatter(
                JSON_LOG_FIELDS,
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT))
    # a no-op when the process already configured logging (the CLI called in-process)
    logging.basicConfig(level=level, handlers=[handler])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _command(
    sub: Any, name: str, summary: str, examples: str, description: str = ""
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description or summary,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ari-app",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('botbridge')}")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: $BOTBRIDGE_CONFIG)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log everything, DEBUG included"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "run",
        "run the Stasis application",
        "  ari-app run\n  ari-app run --log-level DEBUG\n"
        "  BOTBRIDGE_LOG_FORMAT=json ari-app run   one JSON object per log line\n",
        "Connect to Asterisk's ARI and handle calls until SIGTERM (which drains first).",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="log level (default: [logging] level, INFO)",
    )
    p.set_defaults(func=_run)

    p = _command(
        sub,
        "check-config",
        "validate the configuration and print the effective values, secrets masked",
        "  ari-app check-config\n  ari-app --config /etc/botbridge.toml check-config --json\n",
        "Load the configuration as `ari-app run` would. Valid: print every effective "
        "value (secrets masked, report schedules in words) and exit 0. Invalid: name the "
        "bad key and exit 2.",
    )
    p.add_argument("--json", action="store_true", help="print the values as one JSON object")
    p.set_defaults(func=_check_config)

    p = _command(
        sub,
        "channels",
        "list channels with state and bridge variables",
        "  ari-app channels\n  ari-app channels --json\n",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    p.set_defaults(func=_channels)

    p = _command(sub, "bridges", "list bridges and their channels", "  ari-app bridges --json\n")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    p.set_defaults(func=_bridges)

    p = _command(
        sub,
        "get-var",
        "read a channel variable or function",
        "  ari-app get-var 1712345678.12 BOTBRIDGE_INTERACTION_ID\n"
        "  ari-app get-var 1712345678.12 'PJSIP_HEADER(read,User-to-User)'\n",
    )
    p.add_argument("channel", help="channel id (see `ari-app channels`)")
    p.add_argument("name", help="variable or dialplan function, e.g. CALLERID(num)")
    p.set_defaults(func=_get_var)

    p = _command(
        sub,
        "set-var",
        "set a channel variable",
        "  ari-app set-var 1712345678.12 BOTBRIDGE_QUEUE billing-queue\n",
    )
    p.add_argument("channel", help="channel id (see `ari-app channels`)")
    p.add_argument("name", help="variable name")
    p.add_argument("value", help="new value")
    p.set_defaults(func=_set_var)

    p = _command(
        sub,
        "events",
        "tail the app's event stream in readable form",
        "  ari-app events\n  ari-app events --app botbridge\n",
    )
    p.add_argument("--app", help="application to watch (default: a read-only observer of all)")
    p.set_defaults(func=_events)

    p = _command(
        sub,
        "render-config",
        "render the shipped Asterisk configuration into DIR for this host's Asterisk",
        "  ari-app render-config /srv/botbridge\n"
        "  ari-app render-config /srv/botbridge --module-dir /usr/lib/asterisk/modules\n",
    )
    p.add_argument("directory", type=Path, help="instance root: etc/, lib/, log/, ... go here")
    p.add_argument(
        "--module-dir",
        help="Asterisk's module directory (default: found under /usr/lib, with chan_pjsip.so)",
    )
    p.set_defaults(func=_render_config)

    p = _command(
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
    p.add_argument(
        "--limit", type=_positive_int, metavar="N", help="only the N most recent records"
    )
    p.set_defaults(func=_records)

    _report_parser(sub)

    db = _command(
        sub,
        "db",
        "create, upgrade, inspect or downgrade the interaction store's schema",
        "  ari-app db upgrade\n  ari-app db current\n  ari-app db downgrade 0001_initial\n",
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = _command(
        db_sub,
        "upgrade",
        "create the store if needed and migrate it to REVISION",
        "  ari-app db upgrade\n",
    )
    p.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    p.set_defaults(func=_db_upgrade)
    p = _command(db_sub, "current", "print the store's schema revision", "  ari-app db current\n")
    p.set_defaults(func=_db_current)
    p = _command(
        db_sub,
        "downgrade",
        "migrate an existing store down to REVISION",
        "  ari-app db downgrade 0001_initial\n",
    )
    p.add_argument("revision", help="target revision, e.g. 0001_initial or -1")
    p.set_defaults(func=_db_downgrade)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _rest(config: Config) -> AriRest:
    return ari_rest(config)


async def _run(config: Config, args: argparse.Namespace) -> int:
    from ari_app.main import run_app

    await run_app(config)
    return 0


async def _channels(config: Config, args: argparse.Namespace) -> int:
    async with _rest(config) as ari:
        rows: list[dict[str, Any]] = []
        for ch in await ari.channels():
            variables = {}
            for name in SHOWN_VARIABLES:
                value = await ari.get_var(ch.id, name)
                if value:
                    variables[name] = value
            rows.append(
                {
                    "id": ch.id,
                    "name": ch.name,
                    "state": ch.state,
                    "caller": ch.caller.number if ch.caller else "",
                    "dialplan": f"{ch.dialplan.context},{ch.dialplan.exten},{ch.dialplan.priority}"
                    if ch.dialplan
                    else "",
                    "app": f"{ch.dialplan.app_name}({ch.dialplan.app_data})"
                    if ch.dialplan and ch.dialplan.app_name
                    else "",
                    "variables": variables,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        if not rows:
            print("no channels")
        for row in rows:
            print(
                f"{row['name']}  id={row['id']}  state={row['state']}  caller={row['caller']}"
                f"  at={row['dialplan']}  {row['app']}"
            )
            for name, value in row["variables"].items():
                print(f"    {name}={value}")
    return 0


async def _bridges(config: Config, args: argparse.Namespace) -> int:
    async with _rest(config) as ari:
        bridges = await ari.bridges()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": b.id,
                        "type": b.bridge_type,
                        "class": b.bridge_class,
                        "name": b.name,
                        "channels": list(b.channels),
                    }
                    for b in bridges
                ],
                indent=2,
            )
        )
    else:
        if not bridges:
            print("no bridges")
        for b in bridges:
            print(
                f"{b.id}  {b.bridge_type}/{b.technology}  name={b.name}  "
                f"channels={','.join(b.channels) or '-'}"
            )
    return 0


async def _get_var(config: Config, args: argparse.Namespace) -> int:
    async with _rest(config) as ari:
        value = await ari.get_var(args.channel, args.name)
    if value is None:
        print(f"{args.name} is not set on {args.channel}", file=sys.stderr)
        return 1
    print(value)
    return 0


async def _set_var(config: Config, args: argparse.Namespace) -> int:
    async with _rest(config) as ari:
        await ari.set_var(args.channel, args.name, args.value)
    return 0


async def _events(config: Config, args: argparse.Namespace) -> int:
    # an observer app subscribed to everything sees the bridge app's channels without
    # taking them over
    app = args.app or f"{config.ari.app}-observer"
    stream = event_stream(config, app, subscribe_all=args.app is None)

    def show(event: Event) -> None:
        print(format_event(event), flush=True)

    await stream.run(show)
    return 0


async def _render_config(config: Config, args: argparse.Namespace) -> int:
    """Production: the same templates the tests start, for an Asterisk installed here."""
    from ari_app.asterisk import RenderError, find_module_dir, render_instance

    root = args.directory.resolve()
    try:
        module_dir = args.module_dir or find_module_dir()
        render_instance(config, root, module_dir=module_dir)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rendered {root}/etc; start Asterisk with: asterisk -C {root}/etc/asterisk.conf")
    return 0


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

    p = _command(
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


async def _check_config(config: Config, args: argparse.Namespace) -> int:
    """The configuration already loaded and validated (main exits 2 on an error)."""
    values = effective_values(config)
    if args.json:
        print(json.dumps(values, indent=2, default=str))
        return 0
    for key, value in _flatten(values):
        print(f"{key} = {json.dumps(value, default=str)}")
    print("configuration is valid", file=sys.stderr)
    return 0


SECRET_MASK = "********"


def effective_values(config: Config) -> dict[str, Any]:
    """Every configured value as plain data, secrets masked; schedules explained in words."""
    from ari_app.config.cron import CronSchedule

    values: dict[str, Any] = msgspec.to_builtins(config, enc_hook=str)
    values["ari_password"] = SECRET_MASK if config.ari_password else ""
    values["store"]["url"] = mask_url(config.store.url)
    values["webhooks"]["urls"] = [mask_url(url) for url in config.webhooks.urls]
    for schedule in values.get("report_schedules", []):
        schedule["cron_in_words"] = CronSchedule.parse(schedule["cron"]).explain()
    return values


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [
            item
            for key, inner in value.items()
            for item in _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        ]
    if isinstance(value, list | tuple) and any(isinstance(v, dict) for v in value):
        return [item for i, inner in enumerate(value) for item in _flatten(inner, f"{prefix}.{i}")]
    return [(prefix, list(value) if isinstance(value, tuple) else value)]


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


def format_event(event: Event) -> str:
    """One readable line per event."""
    parts = [event.timestamp or "", event.type]
    if event.channel:
        parts.append(f"{event.channel.name} ({event.channel.state})")
    if event.bridge:
        parts.append(f"bridge={event.bridge.id}")
    for name in ("dialstatus", "cause_txt", "variable", "value", "digit"):
        value = getattr(event, name, None)
        if value not in (None, ""):
            parts.append(f"{name}={value}")
    if event.args:
        parts.append(f"args={','.join(event.args)}")
    if event.replace_channel:
        parts.append(f"replaces={event.replace_channel.name}")
    if event.peer:
        parts.append(f"peer={event.peer.name}")
    return "  ".join(p for p in parts if p)


if __name__ == "__main__":
    raise SystemExit(main())
