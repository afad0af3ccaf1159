"""``ari-app channels | bridges | get-var | set-var | events``: a live Asterisk through ARI."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ari_app.ari import Event
from ari_app.cli.common import command
from ari_app.config import Config
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


def add_commands(sub: Any) -> None:
    p = command(
        sub,
        "channels",
        "list channels with state and bridge variables",
        "  ari-app channels\n  ari-app channels --json\n",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    p.set_defaults(func=_channels)

    p = command(sub, "bridges", "list bridges and their channels", "  ari-app bridges --json\n")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    p.set_defaults(func=_bridges)

    p = command(
        sub,
        "get-var",
        "read a channel variable or function",
        "  ari-app get-var 1712345678.12 BOTBRIDGE_INTERACTION_ID\n"
        "  ari-app get-var 1712345678.12 'PJSIP_HEADER(read,User-to-User)'\n",
    )
    p.add_argument("channel", help="channel id (see `ari-app channels`)")
    p.add_argument("name", help="variable or dialplan function, e.g. CALLERID(num)")
    p.set_defaults(func=_get_var)

    p = command(
        sub,
        "set-var",
        "set a channel variable",
        "  ari-app set-var 1712345678.12 BOTBRIDGE_QUEUE billing-queue\n",
    )
    p.add_argument("channel", help="channel id (see `ari-app channels`)")
    p.add_argument("name", help="variable name")
    p.add_argument("value", help="new value")
    p.set_defaults(func=_set_var)

    p = command(
        sub,
        "events",
        "tail the app's event stream in readable form",
        "  ari-app events\n  ari-app events --app botbridge\n",
    )
    p.add_argument("--app", help="application to watch (default: a read-only observer of all)")
    p.set_defaults(func=_events)


async def _channels(config: Config, args: argparse.Namespace) -> int:
    async with ari_rest(config) as ari:
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
    async with ari_rest(config) as ari:
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
    async with ari_rest(config) as ari:
        value = await ari.get_var(args.channel, args.name)
    if value is None:
        print(f"{args.name} is not set on {args.channel}", file=sys.stderr)
        return 1
    print(value)
    return 0


async def _set_var(config: Config, args: argparse.Namespace) -> int:
    async with ari_rest(config) as ari:
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
