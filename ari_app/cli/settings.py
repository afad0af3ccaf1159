"""``ari-app check-config | render-config``: the configuration, checked or rendered."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from ari_app.cli.common import command
from ari_app.config import Config, mask_url

SECRET_MASK = "********"


def add_commands(sub: Any) -> None:
    p = command(
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

    p = command(
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
