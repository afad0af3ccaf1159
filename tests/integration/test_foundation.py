"""Foundation on a real Asterisk: Stasis entry, event-stream reconnect, debug CLI, make up/down.

Each test starts its own Asterisk (no Stasis app process) on free ports and plays the Stasis
application itself through ARI, so what is checked here is the platform the call flow builds
on, independent of the call flow.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ari_app.ari import AriConnectionError, AriRest, Event, EventStream
from ari_app.config import load_config
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import first, until
from tests.integration.test_make_restart import TOOK_OVER

pytestmark = pytest.mark.integration

CALLER_NUMBER = "15550002222"
SERVICE = "5551999"
SUBPROCESS_TIMEOUT_SECONDS = 60


@dataclass
class StasisApp:
    """A minimal Stasis application: records events, answers (and optionally bridges) calls."""

    stack: DevStack
    bridge_calls: bool = False
    events: list[Event] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = self.stack.config
        self.rest = self.stack.rest()
        self.stream = EventStream(
            config.ari.url,
            config.ari.username,
            config.ari_password,
            config.ari.app,
            on_connected=self._connected,
        )
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    async def _connected(self, number: int) -> None:
        self.connections.append(number)

    def _handle(self, event: Event) -> None:
        # the stream's handler only routes (it must not wait for Asterisk): the REST work
        # runs in a task of its own
        self.events.append(event)
        if event.type != "StasisStart" or event.channel is None:
            return
        if event.channel.id in self.answered:
            return  # a channel that enters Stasis again is recorded, not answered twice
        self.answered.append(event.channel.id)
        task = asyncio.get_running_loop().create_task(self._answer(event.channel.id))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _answer(self, channel_id: str) -> None:
        try:
            await self.rest.answer(channel_id)
            if self.bridge_calls:
                bridge = await self.rest.create_bridge("mixing", name="foundation")
                await self.rest.add_to_bridge(bridge.id, channel_id)
                self.bridges.append(bridge.id)
        except Exception as exc:  # reported by the test, not swallowed by the stream
            self.failures.append(f"{type(exc).__name__}: {exc}")
            raise

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]

    async def __aenter__(self) -> StasisApp:
        self._task = asyncio.create_task(self.stream.run(self._handle))
        await until(lambda: self.connections, 10, "the event stream to connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stream.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        await self.rest.close()


# long enough for five CLI processes to start and query ARI on a loaded machine
LIVE_CALL_MS = 12000


def start_caller(stack: DevStack, number: str, duration_ms: int) -> SippRun:
    return stack.sipp().start(
        "common/caller_hangs_up",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=SERVICE,
        keys={"caller_number": number},
        extra=["-d", str(duration_ms)],
        timeout=30,
    )


async def finished(run: SippRun, timeout: float = 20) -> int:
    await until(lambda: not run.running, timeout, f"SIPp {run.name} to finish")
    return run.wait(1)


async def until_no_channels(ari: AriRest, timeout: float = 10) -> None:
    async def empty() -> bool:
        return not await ari.channels()

    emptied: bool = await until(empty, timeout, "no channels left")
    assert emptied


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


async def run_python(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> Completed:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Completed(proc.returncode, out.decode(), err.decode())


async def test_call_enters_stasis_and_is_answered(asterisk: DevStack) -> None:
    async with StasisApp(asterisk) as app:
        caller = start_caller(asterisk, CALLER_NUMBER, 1500)
        await until(lambda: app.of_type("StasisStart"), 10, "StasisStart")
        code = await finished(caller)
        await until(lambda: app.of_type("StasisEnd"), 10, "StasisEnd")
        await until_no_channels(app.rest)
    report = caller.report()
    assert app.failures == []
    assert code == 0, report

    start = app.of_type("StasisStart")[0]
    assert start.application == asterisk.config.ari.app
    # the dialplan passes business_hours after "inbound" (empty: none set for this number),
    # then the verstat headers (docs/configuration.md, "Headers that travel")
    assert start.args[:2] == ("inbound", "")
    assert [a.partition("=")[0] for a in start.args[2:]] == [
        "hdr.P-Asserted-Identity",
        "hdr.From",
    ]
    assert start.args[2] == "hdr.P-Asserted-Identity=" + base64.b64encode(b":").decode()
    sent_from = base64.b64decode(start.args[3].partition("=")[2])
    assert sent_from.startswith(b':"Caller" <sip:'), sent_from
    assert start.channel is not None
    assert start.channel.name.startswith("PJSIP/carrier-")
    assert start.channel.caller.number == CALLER_NUMBER
    assert start.channel.dialplan.exten == SERVICE
    assert start.channel.dialplan.context == "botbridge-inbound"
    assert start.channel.state == "Ring"  # not answered until the app says so
    assert app.answered == [start.channel.id]
    assert app.of_type("StasisEnd")[0].channel_id == start.channel.id

    invite_replies = [
        m.status
        for m in caller.messages()
        if m.direction == "received" and m.cseq_method == "INVITE" and m.status is not None
    ]
    assert invite_replies[0] == 100, report
    assert invite_replies[-1] == 200, report
    assert set(invite_replies) <= {100, 180, 183, 200}, report
    ok = first(caller, status=200, cseq="INVITE", direction="received")
    assert ok.header("Content-Type") == "application/sdp", report
    assert "m=audio" in ok.body and "PCMU/8000" in ok.body, report
    first(caller, method="ACK", direction="sent")
    first(caller, method="BYE", direction="sent")
    first(caller, status=200, cseq="BYE", direction="received")


async def test_hangup_does_not_reenter_stasis(asterisk: DevStack) -> None:
    """A carrier channel enters the Stasis app once; its hangup must not start it again."""
    async with StasisApp(asterisk) as app:
        caller = start_caller(asterisk, CALLER_NUMBER, 200)
        code = await finished(caller)
        await until_no_channels(app.rest)
        # the channel is gone: every event about it has been sent
    assert code == 0, caller.report()
    starts = app.of_type("StasisStart")
    assert len(starts) == 1, "the carrier channel entered Stasis again after hangup: " + "; ".join(
        f"{e.channel.dialplan.context},{e.channel.dialplan.exten},"
        f"{e.channel.dialplan.priority} state={e.channel.state}"
        for e in starts
        if e.channel is not None
    )


async def test_event_stream_reconnects_after_asterisk_restart(asterisk: DevStack) -> None:
    async with StasisApp(asterisk) as app:
        assert app.connections == [1]
        assert app.stream.reconnects == 0
        await asyncio.to_thread(asterisk.instance.restart)
        await until(lambda: 2 in app.connections, 30, "on_connected(2) after the restart")
        assert app.connections[:2] == [1, 2]
        assert app.stream.reconnects >= 1
        assert app.stream.connected
        # the REST session's pooled connection died with the old Asterisk
        await app.rest.close()

        caller = start_caller(asterisk, CALLER_NUMBER, 500)
        start = await until(lambda: app.of_type("StasisStart"), 10, "StasisStart after restart")
        code = await finished(caller)
        await until_no_channels(app.rest)
    assert app.failures == []
    assert code == 0, caller.report()
    assert start[0].channel is not None
    assert start[0].channel.caller.number == CALLER_NUMBER
    assert start[0].args[:2] == ("inbound", "")


async def test_cli_lists_channels_of_a_live_call(asterisk: DevStack, tmp_path: Path) -> None:
    number = "15550003333"
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    env = asterisk.env

    async def cli(*args: str) -> Completed:
        return await run_python(["-m", "ari_app.cli", *args], env, tmp_path)

    async with StasisApp(asterisk, bridge_calls=True) as app:
        caller = start_caller(asterisk, number, LIVE_CALL_MS)
        await until(lambda: app.bridges, 10, "the call answered and bridged")
        start = app.of_type("StasisStart")[0]
        assert start.channel is not None
        channel_id, bridge_id = start.channel.id, app.bridges[0]

        channels, bridges, callerid = await asyncio.gather(
            cli("channels"), cli("bridges"), cli("get-var", channel_id, "CALLERID(num)")
        )
        set_var = await cli("set-var", channel_id, "BOTBRIDGE_PROBE", probe)
        get_var = await cli("get-var", channel_id, "BOTBRIDGE_PROBE")
        still_up = caller.running

        code = await finished(caller)
        await app.rest.destroy_bridge(bridge_id)
        await until_no_channels(app.rest)

        async def bridges_gone() -> bool:
            # A dissolved bridge can still be listed (empty) for a moment after DELETE
            # answers, until Asterisk drops its last reference to it.
            return not await app.rest.bridges()

        await until(bridges_gone, 5, f"bridge {bridge_id} gone after DELETE")
    assert still_up, "the call ended before the CLI was done; raise the caller's -d"
    assert app.failures == []
    assert code == 0, caller.report()

    assert channels.returncode == 0, channels
    rows = [row for row in channels.stdout.splitlines() if f"id={channel_id}" in row]
    assert len(rows) == 1, channels
    line = rows[0]
    assert line.startswith("PJSIP/carrier-"), channels
    assert "state=Up" in line, channels
    assert f"caller={number}" in line, channels
    assert f"at=botbridge-inbound,{SERVICE}," in line, channels
    assert f"Stasis({asterisk.config.ari.app},inbound," in line, channels

    assert bridges.returncode == 0, bridges
    rows = [row for row in bridges.stdout.splitlines() if row.startswith(bridge_id)]
    assert len(rows) == 1, bridges
    bridge_line = rows[0]
    assert "mixing/" in bridge_line and "name=foundation" in bridge_line, bridges
    assert f"channels={channel_id}" in bridge_line, bridges

    assert callerid.returncode == 0, callerid
    assert callerid.stdout.strip() == number, callerid
    assert set_var.returncode == 0, set_var
    assert get_var.returncode == 0, get_var
    assert get_var.stdout.strip() == probe, get_var


async def test_cli_reports_missing_channel_and_empty_lists(
    asterisk: DevStack, tmp_path: Path
) -> None:
    env = asterisk.env
    channels, bridges, missing = await asyncio.gather(
        run_python(["-m", "ari_app.cli", "channels"], env, tmp_path),
        run_python(["-m", "ari_app.cli", "bridges", "--json"], env, tmp_path),
        run_python(["-m", "ari_app.cli", "get-var", "no-such-channel", "X"], env, tmp_path),
    )
    assert (channels.returncode, channels.stdout.strip()) == (0, "no channels"), channels
    assert bridges.returncode == 0 and json.loads(bridges.stdout) == [], bridges
    assert missing.returncode == 1, missing
    assert "X is not set on no-such-channel" in missing.stderr, missing


@pytest.fixture
def devstack_env(runtime: Runtime, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for `python -m devtools.devstack` on free ports, with its own run directory."""
    ports = build_stack(runtime, tmp_path / "ports", free_ports=True)
    env = {
        **ports.env,
        # the dev tooling lives in the repository, not in the installed package
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "BOTBRIDGE_RUN_DIR": str(tmp_path / "run"),
        "BOTBRIDGE_STATE_DIR": str(tmp_path / "state"),
    }
    yield env
    info_path = tmp_path / "run" / "stack.json"
    if info_path.exists():  # a failed test must not leave Asterisk running
        root = json.loads(info_path.read_text())["root"]
        subprocess.run(
            [sys.executable, "-m", "devtools.devstack", "down"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=SUBPROCESS_TIMEOUT_SECONDS,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


async def test_make_up_and_down(
    runtime: Runtime, devstack_env: dict[str, str], tmp_path: Path
) -> None:
    env = devstack_env
    run_dir = tmp_path / "run"
    config = load_config(env=env)
    assert config.sip.port != 5060

    async def devstack(command: str) -> Completed:
        return await run_python(["-m", "devtools.devstack", command], env, tmp_path)

    not_up = await devstack("status")
    assert not_up.returncode == 1 and "not up" in not_up.stdout, not_up

    up = await devstack("up")
    assert up.returncode == 0, up
    assert f"run directory: {run_dir}" in up.stdout, up
    assert f"SIP 127.0.0.1:{config.sip.port}" in up.stdout, up
    info = json.loads((run_dir / "stack.json").read_text())
    root = Path(info["root"])
    # an instance directory of its own: never the one of another run directory's stack
    assert root.parent == runtime.scratch_root()
    assert root.name.startswith("devstack-")
    assert (run_dir / "instance").resolve() == root.resolve()

    status = await devstack("status")
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["alive"] is True, status

    again = await devstack("up")
    assert again.returncode == 0 and "already up" in again.stdout, again

    async with AriRest(config.ari.url, config.ari.username, config.ari_password) as ari:
        about = await ari.asterisk_info()
        assert str(about["system"]["version"]).startswith(("22.", "23.")), about
        applications = [a.get("name") for a in await ari.applications()]
        assert config.ari.app in applications
        assert "registered" in (root / "app.log").read_text()

        # make restart: a new app takes the calls over and is ready, the old one let go of
        # them and exited (no drain), Asterisk stays up
        restart = await devstack("restart")
        assert restart.returncode == 0 and "ready" in restart.stdout, restart
        new = json.loads((run_dir / "stack.json").read_text())
        assert new["app_pid"] != info["app_pid"] and new["asterisk_pid"] == info["asterisk_pid"]
        assert json.loads((await devstack("status")).stdout)["alive"] is True
        assert config.ari.app in [a.get("name") for a in await ari.applications()]
        log_text = (root / "app.log").read_text()
        assert log_text.count("letting go of") == 1 and log_text.count(TOOK_OVER) == 1
        assert "drained; stopping" not in log_text

        down = await devstack("down")
        assert down.returncode == 0, down
        assert "stopped Asterisk and the app" in down.stdout, down
        assert "still exiting" not in down.stdout, down

        async def ari_gone() -> bool:
            try:
                await ari.asterisk_info()
            except AriConnectionError:
                return True
            return False

        stopped: bool = await until(ari_gone, 15, "ARI to stop answering")
        assert stopped

    assert not (run_dir / "stack.json").exists()
    after = await devstack("status")
    assert after.returncode == 1 and "not up" in after.stdout, after
    shutil.rmtree(root, ignore_errors=True)
