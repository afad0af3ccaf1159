"""ari-app: run the bot bridge's Stasis application, inspect a live Asterisk through ARI,
read the interaction store (records, reports) and manage its schema.

Every command reads the same configuration as the app: the built-in defaults, then the TOML
file named by --config or $BOTBRIDGE_CONFIG, then BOTBRIDGE_* environment variables
(docs/configuration.md). Run `ari-app COMMAND --help` for a command's options and examples.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.exc import SQLAlchemyError

from ari_app.ari import AriError
from ari_app.calls.logcontext import CallFields
from ari_app.cli import agents, live, settings, store
from ari_app.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, command
from ari_app.cli.live import format_event
from ari_app.cli.settings import effective_values
from ari_app.config import LOG_LEVELS, Config, ConfigError, load_config
from ari_app.store import StoreNotReady

__all__ = ["JSON_LOG_FIELDS", "configure_logging", "effective_values", "format_event", "main"]

EXAMPLES = """\
examples:
  ari-app run --log-level DEBUG            run the app (Asterisk must be up)
  ari-app check-config                     show the effective configuration, secrets masked
  ari-app report --last 7d                 this week's interaction report
  ari-app records --since 24h --limit 20   the latest interaction records as JSON lines
  ari-app db upgrade                       create or upgrade the interaction store
  ari-app channels                         live channels with the bridge's variables
  ari-app agent login alice                log agent alice in to its queues
"""
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

    p = command(
        sub,
        "run",
        "run the Stasis application",
        "  ari-app run\n  ari-app run --log-level DEBUG\n  ari-app run --take-over\n"
        "  BOTBRIDGE_LOG_FORMAT=json ari-app run   one JSON object per log line\n",
        "Connect to Asterisk's ARI and handle calls until SIGTERM (which drains first).",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="log level (default: [logging] level, INFO)",
    )
    p.add_argument(
        "--take-over",
        action="store_true",
        help="take the calls over from the instance running with this state directory, "
        "which then exits without touching a call (docs/operations.md, Restart)",
    )
    p.set_defaults(func=_run)

    settings.add_commands(sub)
    live.add_commands(sub)
    store.add_commands(sub)
    agents.add_commands(sub)
    return parser


async def _run(config: Config, args: argparse.Namespace) -> int:
    from ari_app.main import run_app

    await run_app(config, take_over=args.take_over)
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on Linux): the same asyncio API with less
    CPU per event and per request (docs/performance.md); else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
