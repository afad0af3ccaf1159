"""``ari-app agent login|logout|pause|unpause|status``: agents at run time, through ARI."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ari_app.agents import ACTIONS, AgentControl, AgentError
from ari_app.cli.common import EXIT_USAGE, command
from ari_app.config import Config
from ari_app.connect import ari_rest


def add_commands(sub: Any) -> None:
    p = command(
        sub,
        "agent",
        "log an agent in or out, pause or unpause it, or show the agents' state",
        "  ari-app agent login alice\n  ari-app agent pause alice\n"
        "  ari-app agent status\n  ari-app agent status alice --json\n",
        "Agents are [agents.<name>] of the configuration. login/logout add or remove an "
        "agent with membership 'dynamic' in every queue of it (app_queue's own members, "
        "kept across restarts); pause/unpause work for every agent. Nothing is reloaded. "
        "Prints the agent's state per queue: logged_out, available or paused.",
    )
    p.add_argument(
        "action",
        choices=(*ACTIONS, "status"),
        help="what to do: " + ", ".join((*ACTIONS, "status")),
    )
    p.add_argument("name", nargs="?", help="the agent (status: every agent when omitted)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_agent)


async def _agent(config: Config, args: argparse.Namespace) -> int:
    if args.action != "status" and not args.name:
        print(f"error: `agent {args.action}` needs an agent name", file=sys.stderr)
        return EXIT_USAGE
    async with ari_rest(config) as ari:
        control = AgentControl(ari, config)
        try:
            if args.action == "status":
                states = await control.states([args.name] if args.name else None)
            else:
                states = {args.name: await control.act(args.name, args.action)}
        except AgentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        print(json.dumps(states, indent=2))
        return 0
    for name, queues in states.items():
        shown = "  ".join(f"{queue}={state}" for queue, state in queues.items())
        print(f"{name}  {shown or '(no queue)'}")
    return 0
