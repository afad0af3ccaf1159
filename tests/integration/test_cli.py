"""The installed ``ari-app`` console script, run as an operator runs it (a subprocess).

No Asterisk here: these are the commands that read the configuration and the interaction
store, and `run` against an ARI address nothing listens on. ``test_foundation.py`` drives
the ARI commands against a live Asterisk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import pytest

from ari_app import cli
from ari_app.config import load_config
from ari_app.store import InteractionStore, head_revisions
from tests.records import create, update

ARI_APP = Path(sys.executable).parent / "ari-app"
COMMANDS = (
    "run",
    "check-config",
    "channels",
    "bridges",
    "get-var",
    "set-var",
    "events",
    "render-config",
    "records",
    "report",
    "db",
    "agent",
)
pytestmark = pytest.mark.integration
RUN_LOG_SECONDS = 20.0  # how long `ari-app run` may take to log its start-up lines


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh state directory and nothing inherited that would change the configuration."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOTBRIDGE_")}
    clean["BOTBRIDGE_STATE_DIR"] = str(tmp_path / "state")
    return clean


def ari_app(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ARI_APP), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def seed(env: dict[str, str], started: list[tuple[str, datetime]]) -> Path:
    """A store with one resolved record per (interaction id, start time)."""
    config = load_config(env=env)
    store = InteractionStore(config.store.url)
    try:
        for iid, moment in started:
            start = moment.timestamp()
            create(store, iid, profile="default", caller_channel=iid, started_at=start)
            update(
                store,
                iid,
                state="resolved",
                outcome="resolved",
                bot_answered_at=start + 1,
                ended_at=start + 30,
            )
    finally:
        store.close()
    return Path(config.store.path)


# -- version and help -------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata(env: dict[str, str]) -> None:
    done = ari_app(env, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"ari-app {version('botbridge')}"


def test_help_is_plain_text_with_examples(env: dict[str, str]) -> None:
    done = ari_app(env, "--help")
    assert done.returncode == 0
    assert "``" not in done.stdout and ":class:" not in done.stdout
    assert "examples:" in done.stdout
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_examples(env: dict[str, str], command: str) -> None:
    done = ari_app(env, command, "--help")
    assert done.returncode == 0, done.stderr
    assert "examples:" in done.stdout
    assert f"ari-app {command}" in done.stdout.split("examples:")[1]
    assert "``" not in done.stdout


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from ((f"{name} {n}", a) for n, a in _actions(child))
        else:
            yield parser.prog, action


def test_every_option_and_argument_has_help_text() -> None:
    missing = [
        f"{prog}: {action.dest}"
        for prog, action in _actions(cli._parser())
        if not action.help and action.dest != "help"
    ]
    assert not missing


# -- report -----------------------------------------------------------------------------------


def test_report_without_a_store_is_an_error_and_creates_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = ari_app(env, "report", cwd=tmp_path)
    assert done.returncode == 1
    assert "no interaction store at" in done.stderr
    assert "ari-app db upgrade" in done.stderr
    assert not (tmp_path / "state").exists()
    assert list(tmp_path.iterdir()) == []


def test_report_defaults_to_today_and_takes_last(env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    seed(env, [("today", now - timedelta(minutes=1)), ("old", now - timedelta(days=3))])
    today = ari_app(env, "report", "--format", "json")
    assert today.returncode == 0, today.stderr
    assert today.stderr == ""  # no library log lines on the terminal
    figures = json.loads(today.stdout)
    assert figures["from"] == figures["to"] == now.date().isoformat()
    assert figures["total"]["total"] == 1
    week = json.loads(ari_app(env, "report", "--last", "7d", "--format", "json").stdout)
    assert week["from"] == (now.date() - timedelta(days=6)).isoformat()
    assert week["total"]["total"] == 2
    day = json.loads(ari_app(env, "report", "--last", "24h", "--format", "json").stdout)
    assert day["from"] == (now.date() - timedelta(days=1)).isoformat()
    old_day = (now - timedelta(days=3)).date().isoformat()
    explicit = ari_app(env, "report", "--from", old_day, "--to", old_day, "--format", "json")
    assert json.loads(explicit.stdout)["total"]["total"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--last", "7x"], "--last must be a positive number followed by m, h, d or w"),
        (["--last", "0d"], "--last must be a positive number"),
        (["--last", "7d", "--from", "2026-01-01"], "cannot be combined"),
        (["--from", "2026-02-01", "--to", "2026-01-01"], "before it starts"),
        (["--to", "2026-01-01"], "--to needs --from"),
    ],
)
def test_report_bad_periods(env: dict[str, str], args: list[str], message: str) -> None:
    seed(env, [])
    done = ari_app(env, "report", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_reader_does_not_migrate_an_old_store(env: dict[str, str]) -> None:
    path = seed(env, [])
    store = InteractionStore(path, migrate=False)
    store.downgrade("0001_initial")
    store.close()
    done = ari_app(env, "report")
    assert done.returncode == 1
    assert "revision 0001_initial" in done.stderr and "ari-app db upgrade" in done.stderr
    store = InteractionStore(path, migrate=False)
    try:
        assert store.revision() == ("0001_initial",)
    finally:
        store.close()


# -- records ----------------------------------------------------------------------------------


def test_records_filters(env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    seed(
        env,
        [
            ("a-old", now - timedelta(days=3)),
            ("b-hour", now - timedelta(hours=1)),
            ("c-now", now - timedelta(minutes=1)),
        ],
    )

    def ids(*args: str) -> list[str]:
        done = ari_app(env, "records", *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return [json.loads(line)["interaction_id"] for line in done.stdout.splitlines()]

    assert ids() == ["a-old", "b-hour", "c-now"]
    assert ids("--since", "24h") == ["b-hour", "c-now"]
    assert ids("--since", "30m") == ["c-now"]
    assert ids("--since", (now - timedelta(days=1)).date().isoformat()) == ["b-hour", "c-now"]
    assert ids("--since", (now - timedelta(hours=2)).isoformat()) == ["b-hour", "c-now"]
    assert ids("--limit", "2") == ["b-hour", "c-now"]
    assert ids("--since", "7d", "--limit", "1") == ["c-now"]
    assert ids("--id", "b-hour") == ["b-hour"]
    missing = ari_app(env, "records", "--id", "nope")
    assert missing.returncode == 1 and "no record with interaction id nope" in missing.stderr
    assert ari_app(env, "records", "--limit", "0").returncode == 2
    assert "--since must be" in ari_app(env, "records", "--since", "yesterday").stderr


def test_records_without_a_store(env: dict[str, str]) -> None:
    done = ari_app(env, "records")
    assert done.returncode == 1
    assert "no interaction store at" in done.stderr
    assert not Path(env["BOTBRIDGE_STATE_DIR"]).exists()


# -- check-config -----------------------------------------------------------------------------


def test_check_config_masks_secrets_and_explains_schedules(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "botbridge.toml"
    config.write_text(
        '[smtp]\nhost = "127.0.0.1"\n'
        '[[report_schedules]]\ncron = "0 7 * * mon"\nperiod = "previous_week"\n'
        'recipients = ["ops@example.com"]\n'
        '[webhooks]\nurls = ["https://crm:hook-s3cret@crm.example/in?token=tok-s3cret&site=7"]\n'
    )
    env = {
        **env,
        "BOTBRIDGE_ARI_PASSWORD": "ari-s3cret",
        "BOTBRIDGE_DATABASE_URL": (
            "postgresql+psycopg://botbridge:db-s3cret@127.0.0.1/bb?password=q-s3cret"
        ),
    }
    done = ari_app(env, "--config", str(config), "check-config")
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines())
    assert lines["ari_password"] == '"********"'
    assert lines["store.url"] == '"postgresql+psycopg://botbridge:***@127.0.0.1/bb?password=***"'
    assert lines["webhooks.urls"] == '["https://crm:***@crm.example/in?token=***&site=7"]'
    assert lines["report_schedules.0.cron_in_words"] == '"At 07:00 on Monday"'
    assert lines["sip.port"] == "5060"
    as_json = json.loads(ari_app(env, "--config", str(config), "check-config", "--json").stdout)
    assert as_json["ari_password"] == "********"
    assert as_json["logging"] == {"level": "INFO", "format": "text"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[sip]\nport = 99999\n", "sip.port"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level: must be one of DEBUG, INFO"),
        ('[logging]\nformat = "xml"\n', "logging.format: must be one of text, json"),
    ],
)
def test_check_config_names_the_bad_key(
    env: dict[str, str], tmp_path: Path, toml: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    done = ari_app(env, "--config", str(config), "check-config")
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


# -- db ---------------------------------------------------------------------------------------


def test_db_upgrade_current_downgrade(env: dict[str, str]) -> None:
    current = ari_app(env, "db", "current")
    assert current.returncode == 1 and "no interaction store at" in current.stderr
    upgrade = ari_app(env, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    head = ", ".join(head_revisions())
    assert f"at {head}" in upgrade.stdout
    assert upgrade.stderr == ""  # Alembic's INFO lines stay off the terminal
    assert ari_app(env, "db", "current").stdout.strip() == f"{head} (head)"
    down = ari_app(env, "db", "downgrade", "0001_initial")
    assert down.returncode == 0, down.stderr
    assert ari_app(env, "db", "current").stdout.startswith("0001_initial (this version's head")
    assert ari_app(env, "db", "upgrade").returncode == 0
    assert ari_app(env, "db", "current").stdout.strip() == f"{head} (head)"


# -- run: log level and format ----------------------------------------------------------------


def _run_until_started(env: dict[str, str], *args: str) -> list[str]:
    """Start `ari-app run` against an ARI address nothing listens on, collect its log lines
    up to the first reconnect warning, then stop it (SIGTERM drains and exits)."""
    env = {
        **env,
        "BOTBRIDGE_ARI_URL": "http://127.0.0.1:1/ari",  # port 1: nothing listens there
        "BOTBRIDGE_ARI_PASSWORD": "unused",
        "BOTBRIDGE_HTTP_ENABLED": "false",
    }
    lines: list[str] = []
    deadline = time.monotonic() + RUN_LOG_SECONDS
    with subprocess.Popen(
        [str(ARI_APP), "run", *args], env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                lines.append(line.rstrip("\n"))
                if "reconnecting" in line:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=RUN_LOG_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return lines


def test_run_logs_json_lines_with_the_node(env: dict[str, str]) -> None:
    lines = _run_until_started({**env, "BOTBRIDGE_LOG_FORMAT": "json"})
    assert lines, "no log output"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    started = next(r for r in records if "starting against" in r["message"])
    assert started["level"] == "INFO"
    assert started["logger"] == "ari_app.main"
    assert (
        started["node"]
        == load_config(env=env | {"BOTBRIDGE_ARI_URL": "http://127.0.0.1:1/ari"}).store.node
    )
    assert datetime.fromisoformat(started["timestamp"]).tzinfo is not None
    assert not any(r["logger"].startswith("alembic") for r in records)


def test_run_log_level_option(env: dict[str, str]) -> None:
    text = _run_until_started(env)
    assert any(" INFO ari_app.main: " in line for line in text)  # the default text format
    quiet = _run_until_started(env, "--log-level", "WARNING")
    assert quiet and all(" INFO " not in line for line in quiet)
    assert any(" WARNING ari_app.ari.events: " in line for line in quiet)
