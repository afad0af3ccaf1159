"""What every ``ari-app`` command shares: exit statuses and the sub-command builder."""

from __future__ import annotations

import argparse
from typing import Any

# exit statuses: 1 = the command failed (Asterisk or the store said no), 2 = bad usage or
# configuration, 130 = interrupted
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def command(
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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value
