"""``ari-app``: run the Stasis application, and debug a live Asterisk through ARI REST.

Every subcommand reads the same configuration as the app (defaults, BOTBRIDGE_CONFIG,
environment); see docs/configuration.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ari_app.ari import AriError, AriRest, Event
from ari_app.config import Config, ConfigError, load_config
from ari_app.connect import ari_rest, event_stream

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return int(runner.run(args.func(config, args)) or 0)
    except AriError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ari-app", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $BOTBRIDGE_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the Stasis application").set_defaults(func=_run)
    p = sub.add_parser("channels", help="list channels with state and bridge variables")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_channels)
    p = sub.add_parser("bridges", help="list bridges and their channels")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bridges)
    p = sub.add_parser("get-var", help="read a channel variable or function")
    p.add_argument("channel")
    p.add_argument("name")
    p.set_defaults(func=_get_var)
    p = sub.add_parser("set-var", help="set a channel variable")
    p.add_argument("channel")
    p.add_argument("name")
    p.add_argument("value")
    p.set_defaults(func=_set_var)
    p = sub.add_parser("events", help="tail the app's event stream in readable form")
    p.add_argument("--app", help="application to watch (default: a read-only observer of all)")
    p.set_defaults(func=_events)
    p = sub.add_parser(
        "render-config",
        help="render the shipped Asterisk configuration into DIR for this host's Asterisk",
    )
    p.add_argument("directory", type=Path, help="instance root: etc/, lib/, log/, ... go here")
    p.add_argument(
        "--module-dir",
        help="Asterisk's module directory (default: found under /usr/lib, with chan_pjsip.so)",
    )
    p.set_defaults(func=_render_config)
    p = sub.add_parser("records", help="print interaction records as JSON lines")
    p.set_defaults(func=_records)
    _report_parser(sub)
    return parser


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
    app = args.app or f"{config.app_name}-observer"
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
    from ari_app.store import open_store

    if config.store_url == f"sqlite:///{config.store_path}" and not config.store_path.exists():
        print(f"no records yet at {config.store_path}", file=sys.stderr)
        return 1
    store = open_store(config)  # [store] url: SQLite or PostgreSQL
    try:
        for record in store.all():
            print(json.dumps(record, default=str))
    finally:
        store.close()
    return 0


def _report_parser(sub: Any) -> None:
    from ari_app.reporting.reports import FORMATS, GROUP_BYS

    p = sub.add_parser(
        "report",
        help="interaction report for a period (docs/reports.md)",
        description="Interactions started between --from and --to (both days included, in "
        "[reports] timezone), grouped by day, bot profile or queue.",
    )
    p.add_argument("--from", dest="date_from", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--group-by", choices=GROUP_BYS, default="day")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=_report)


async def _report(config: Config, args: argparse.Namespace) -> int:
    from ari_app.reporting.reports import (
        Period,
        ReportError,
        render,
        report_from_store,
        timezone_named,
    )
    from ari_app.store import open_store

    try:
        tz = timezone_named(config.reports.timezone)
        period = Period.parse(args.date_from, args.date_to, tz)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = open_store(config)
    try:
        report = report_from_store(store, period, args.group_by)
    finally:
        store.close()
    sys.stdout.write(render(report, args.format))
    return 0


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
