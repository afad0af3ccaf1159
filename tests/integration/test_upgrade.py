"""An upgrade from the previous release's wheel to this one's, across a schema migration,
under load, the way docs/deployment.md ("Restarts and upgrades") does it on a host.

The project has no release tags yet: the previous release is the commit just before the
newest store migration was added (``git archive`` of its parent), so the upgrade always
crosses a migration. Each wheel is built with pip and installed into a virtualenv of its
own (tests/wheels.py), as the two instances of botbridge-app@.service have. Asterisk's
configuration is rendered by the previous release's package, as botbridge-asterisk's
ExecStartPre did before the upgrade (it is rendered again only at a later quiet restart).
The previous release runs the app on a PostgreSQL store; with calls running, the new
release's `ari-app run --take-over` (the unit's ExecStart, from its own virtualenv)
migrates the store while the previous one still runs, registers, and takes the calls over.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.devstack import DevStack, build_stack
from devtools.postgres import PostgresServer, PostgresUnavailable
from devtools.runtime import Runtime
from devtools.stack import AsteriskInstance, StackError
from tests.harness import resolving_load, sipp_finished
from tests.integration.test_make_restart import TOOK_OVER
from tests.records import assert_resolved_once, closed_calls
from tests.wheels import build_wheel, checkout_copy, run, venv_with

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = "ari_app/store/migrations/versions"
APP_UNIT = REPO / "contrib" / "systemd" / "botbridge-app@.service"
# the load of the restart test (test_make_restart.py): 20 calls/s, 30 s bot conversations
CALL_RATE = 20  # calls/s
BOT_TALK_MS = 30_000
LOAD_SECONDS = 40  # calls are placed for this long; the upgrade falls within it
CALLS = CALL_RATE * LOAD_SECONDS
UPGRADE_AFTER_SECONDS = 12  # a few hundred conversations in progress by then
SIPP_TIMEOUT_SECONDS = LOAD_SECONDS + BOT_TALK_MS / 1000 + 120
RECORDS_CLOSED_SECONDS = 60
PREFIX = "1885"


@dataclass(frozen=True)
class Release:
    """One release's wheel installed into a virtualenv of its own."""

    venv: Path

    @property
    def ari_app(self) -> str:
        return str(self.venv / "bin" / "ari-app")

    def db_current(self, env: dict[str, str]) -> str:
        """`ari-app db current` of this release: the store's revision and whether it is this
        release's head."""
        done = run([self.ari_app, "db", "current"], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()


def git(*args: str) -> str:
    done = run(["git", "-C", str(REPO), *args])
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def previous_source(directory: Path) -> Path:
    """This repository at the commit before the newest migration file was added."""
    shallow = git("rev-parse", "--is-shallow-repository")
    assert shallow == "false", "the previous release is found in the history: a full clone"
    added = git("log", "--diff-filter=A", "--format=%H", "-1", "--", MIGRATIONS)
    assert added, f"no commit added a file under {MIGRATIONS}"
    new_files = git("show", "--diff-filter=A", "--name-only", "--format=", added, "--", MIGRATIONS)
    archive = directory / "previous.tar"
    git("archive", "-o", str(archive), f"{added}^")
    source = directory / "previous-source"
    source.mkdir()
    unpacked = run(["tar", "-xf", str(archive), "-C", str(source)])
    assert unpacked.returncode == 0, unpacked.stderr
    for name in new_files.splitlines():  # the previous release lacks the newest migration
        assert not (source / name).exists(), name
    return source


def install(source: Path, directory: Path) -> Release:
    venv = directory / "venv"
    packages = venv_with(build_wheel(source, directory / "dist"), venv)
    python = str(venv / "bin" / "python")
    where = run([python, "-c", "import ari_app; print(ari_app.__file__)"], cwd=directory)
    assert where.stdout.startswith(str(packages)), where.stdout + where.stderr  # not a checkout
    return Release(venv)


@dataclass
class RenderedBy(AsteriskInstance):
    """Asterisk whose configuration the package of ``release`` renders (botbridge-asterisk's
    ``ari-app render-config``), with the instance's paths as the runtime sees them."""

    release: Release | None = None
    env: dict[str, str] | None = None

    def render_config(self) -> None:
        assert self.release is not None
        host = str(self.runtime.scratch_root().resolve())
        script = (
            "import sys; from pathlib import Path\n"
            "from ari_app.asterisk import render_instance\n"
            "from ari_app.config import load_config\n"
            "root, module_dir, host, inside = sys.argv[1:]\n"
            "def path_of(p): s = str(Path(p).resolve()); assert s.startswith(host), s; "
            "return inside + s[len(host):]\n"
            "render_instance(load_config(), Path(root), module_dir=module_dir, path_of=path_of)\n"
        )
        done = run(
            [
                str(self.release.venv / "bin" / "python"),
                "-c",
                script,
                str(self.root),
                self.runtime.module_dir(),
                host,
                self.runtime.runtime_path(Path(host)),
            ],
            env=self.env,
            cwd=self.root,  # `python -c` imports from its working directory first
        )
        if done.returncode != 0:
            raise StackError(f"render by {self.release.venv}: {done.stderr[-2000:]}")


@pytest.fixture
def database_url() -> Iterator[str]:
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))
    try:
        url = server.create_database()
        yield url
        server.drop_database(url)
    finally:
        server.stop()


@pytest.fixture
def stack(runtime: Runtime, database_url: str) -> Iterator[DevStack]:
    """Asterisk and the app on free loopback ports with a PostgreSQL store; nothing started."""
    root = runtime.scratch_root() / f"test-upgrade-{uuid.uuid4().hex[:8]}"
    built = build_stack(
        runtime, root, free_ports=True, extra_env={"BOTBRIDGE_DATABASE_URL": database_url}
    )
    built.env.pop("PYTHONPATH", None)  # the apps import their own virtualenv's package
    yield built
    built.stop()
    shutil.rmtree(root, ignore_errors=True)


def unit_arguments() -> list[str]:
    """What botbridge-app@.service runs after its ``ari-app``: ``run --take-over``."""
    (line,) = [ln for ln in APP_UNIT.read_text().splitlines() if ln.startswith("ExecStart=")]
    program, *arguments = shlex.split(line.removeprefix("ExecStart="))
    assert program.endswith("/bin/ari-app"), line
    return arguments


def command_line(pid: int) -> list[str]:
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    return [a.decode() for a in arguments if a != b"-v"]  # BOTBRIDGE_APP_DEBUG's flag


async def test_an_upgrade_across_a_migration_under_load_hands_every_call_over(
    runtime: Runtime, stack: DevStack, tmp_path: Path
) -> None:
    """Calls at CALL_RATE for LOAD_SECONDS, each a 30 s bot conversation, on the previous
    release; the new release takes over UPGRADE_AFTER_SECONDS in, migrating the store: no
    caller or bot call fails, the bot answers every call, none bypasses the bot or is cut
    (every record `resolved` after its whole conversation), each call has one record, and
    the store is at the new release's head."""
    previous = install(previous_source(tmp_path), tmp_path / "previous")
    this = install(checkout_copy(REPO, tmp_path / "this-source"), tmp_path / "this")
    stack.instance = RenderedBy(runtime, stack.config, stack.root, release=previous, env=stack.env)
    stack.instance.start()
    stack.app_command = (previous.ari_app,)
    stack.start_app()
    old = stack.app_proc
    assert old is not None
    before = previous.db_current(stack.env)
    assert before.endswith("(head)"), before  # the previous release made the store
    assert not this.db_current(stack.env).endswith("(head)")  # this release has more

    callers, bot = resolving_load(
        stack,
        calls=CALLS,
        rate=CALL_RATE,
        talk_ms=BOT_TALK_MS,
        prefix=PREFIX,
        timeout=SIPP_TIMEOUT_SECONDS,
    )
    await asyncio.sleep(UPGRADE_AFTER_SECONDS)
    # deployment.md: start the other instance, from the virtualenv the new wheel went into
    stack.app_command = (this.ari_app,)
    stack.start_app(take_over_from=old.pid)  # ready once the previous release exited
    assert stack.app_proc is not None
    new_command = command_line(stack.app_proc.pid)
    assert new_command[1:] == [this.ari_app, *unit_arguments()], new_command
    assert old.returncode == 0, stack.app_log_text()[-3000:]  # it let go and exited by itself
    after = this.db_current(stack.env)
    assert after.endswith("(head)") and after.split()[0] != before.split()[0], (before, after)

    for party in (callers, bot):
        await sipp_finished(party, SIPP_TIMEOUT_SECONDS)
        assert party.wait(1) == 0, party.report()[-3000:]
    assert sum(1 for m in bot.messages() if m.method == "INVITE") == CALLS

    rows = await closed_calls(stack.config.store.url, PREFIX, CALLS, RECORDS_CLOSED_SECONDS)
    assert_resolved_once(rows, CALLS, BOT_TALK_MS)
    log_text = stack.app_log_text()
    took_over = [line for line in log_text.splitlines() if TOOK_OVER in line]
    print(before, "->", after, *took_over, sep="\n")
    assert len(took_over) == 1, log_text[-3000:]
    assert "did not let go" not in log_text
