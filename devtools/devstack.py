"""The dev stack: Asterisk with the project's config plus the Stasis app, in the background.

``python -m devtools.devstack up|down|status|logs`` backs ``make up``, ``make down`` and
``make logs``. The same ``DevStack`` class, given free ports, is what the tests start.
Everything of one stack lives under one run directory: rendered config, Asterisk logs, the
app's log, SIPp traces and the interaction store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ari_app.ari import AriError, AriRest
from ari_app.calls.handover import HANDOVER_SECONDS, LET_GO_SECONDS
from ari_app.config import Config, ensure_password_file, load_config, mask_url
from ari_app.connect import ari_rest
from devtools.runtime import Runtime, RuntimeUnavailable, select_runtime
from devtools.sipp import Sipp
from devtools.stack import AsteriskInstance, StackError, free_port

APP_READY_TIMEOUT_SECONDS = 15
APP_STOP_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.1
SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "tests" / "scenarios"
RUN_INFO = "stack.json"
APP_READY_MARK = "registered"
READY_PROBE_TIMEOUT_SECONDS = 1.0
HTTP_OK = 200


@dataclass
class DevStack:
    """Asterisk + the app as a subprocess, all files under ``root``."""

    runtime: Runtime
    config: Config
    env: dict[str, str]
    root: Path
    bot_port: int
    agent_port: int
    app_proc: subprocess.Popen[bytes] | None = None
    # how the app is run: this environment's package, or an installed wheel's `ari-app`
    app_command: tuple[str, ...] = (sys.executable, "-m", "ari_app.cli")
    instance: AsteriskInstance = field(init=False)
    _sipps: list[Sipp] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.instance = AsteriskInstance(self.runtime, self.config, self.root)

    @property
    def app_log(self) -> Path:
        return self.root / "app.log"

    @property
    def sip_port(self) -> int:
        return self.config.sip.port

    @property
    def sip_remote(self) -> str:
        return f"{self.config.sip.host}:{self.sip_port}"

    def rest(self) -> AriRest:
        return ari_rest(self.config)

    def sipp(self) -> Sipp:
        """SIPp parties against this stack; any still running when the stack stops (a test
        that failed before stopping them) are stopped with it."""
        sipp = Sipp(self.runtime, SCENARIOS_DIR, self.root / "sipp")
        self._sipps.append(sipp)
        return sipp

    def start(self, *, detach: bool = False) -> None:
        self.instance.start(detach=detach)
        try:
            self.start_app(detach=detach)
        except BaseException:
            self.stop()  # never leave an Asterisk (or a half-started app) behind
            raise

    def stop(self) -> None:
        self.stop_sipps()
        self.stop_app()
        self.instance.stop()

    def stop_sipps(self) -> None:
        for sipp in self._sipps:
            sipp.stop_all()
        self._sipps.clear()

    def start_app(self, *, detach: bool = False, take_over_from: int | None = None) -> None:
        """Start the app, ready on /readyz; ``take_over_from``: the running app's pid, whose
        calls it takes over (``--take-over``): ready once that one has exited too."""
        # the log is appended to across runs: only what this start writes counts
        offset = self.app_log.stat().st_size if self.app_log.exists() else 0
        take_over = ["--take-over"] if take_over_from is not None else []
        previous = self.app_proc if take_over_from is not None else None
        # the child keeps its own copy of the descriptor; ours is closed once it has started
        with self.app_log.open("ab") as app_log:
            self.app_proc = subprocess.Popen(
                [
                    *self.app_command,
                    *(["-v"] if os.environ.get("BOTBRIDGE_APP_DEBUG") else []),
                    "run",
                    *take_over,
                ],
                env=self.env,
                stdout=app_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )
        wait = APP_READY_TIMEOUT_SECONDS + (HANDOVER_SECONDS if take_over else 0)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _gone(take_over_from, previous) and self._ready(offset):
                return
            if self.app_proc.poll() is not None:
                raise StackError(
                    f"the app exited ({self.app_proc.returncode}); "
                    f"see {self.app_log}:\n{self.app_log_text()[-1500:]}"
                )
            time.sleep(POLL_SECONDS)
        self.stop_app()
        raise StackError(
            f"the app did not register with ARI in {APP_READY_TIMEOUT_SECONDS}s; see {self.app_log}"
        )

    def _ready(self, log_offset: int) -> bool:
        """The app's /readyz answers 200 (ARI connected, store reachable); without its HTTP
        server, the registration line in its log."""
        if not self.config.http.enabled:
            return APP_READY_MARK in self.app_log_text()[log_offset:]
        url = f"http://{self.config.http.host}:{self.config.http.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=READY_PROBE_TIMEOUT_SECONDS) as reply:
                return bool(reply.status == HTTP_OK)
        except (OSError, ValueError):  # not listening yet, or 503 (HTTPError is an OSError)
            return False

    def restart_app(self) -> None:
        """SIGTERM (a drain), then a new app, ready on /readyz (`make restart` hands over)."""
        self.stop_app()
        self.start_app()

    def stop_app(self) -> None:
        if self.app_proc is not None and self.app_proc.poll() is None:
            self.app_proc.send_signal(signal.SIGTERM)  # the app drains: give it the time
            try:
                self.app_proc.wait(
                    timeout=self.config.bridge.drain_seconds + APP_STOP_TIMEOUT_SECONDS
                )
            except subprocess.TimeoutExpired:
                self.app_proc.kill()
                self.app_proc.wait()

    def app_log_text(self) -> str:
        return self.app_log.read_text(errors="replace") if self.app_log.exists() else ""


def build_stack(
    runtime: Runtime,
    root: Path,
    *,
    free_ports: bool,
    extra_env: Mapping[str, str] | None = None,
) -> DevStack:
    """A stack rooted at ``root``: on free loopback ports (tests) or on the configured ones."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("BOTBRIDGE_STATE_DIR", str(root / "state"))
    if free_ports:
        env.update(free_port_env())
        env.update(
            {"BOTBRIDGE_STATE_DIR": str(root / "state"), "BOTBRIDGE_ARI_PASSWORD": uuid.uuid4().hex}
        )
    env.update(extra_env or {})
    config = load_config(env=env)
    if not config.ari_password:
        ensure_password_file(config)
        config = load_config(env=env)
    bot_port = port_of(config.profiles["default"].bot_uri)
    agent_port = port_of(config.sip.agent_contact)
    return DevStack(runtime, config, env, root, bot_port, agent_port)


def free_port_env() -> dict[str, str]:
    """Every port of a stack (ARI, SIP, TLS, bot, agent, RTP, HTTP) on free loopback ports,
    as the environment variables the configuration reads."""
    bot_port, agent_port = free_port(udp_too=True), free_port(udp_too=True)
    rtp_start = free_rtp_range()
    return {
        "BOTBRIDGE_ARI_URL": f"http://127.0.0.1:{free_port()}/ari",
        "BOTBRIDGE_SIP_PORT": str(free_port(udp_too=True)),
        "BOTBRIDGE_SIP_TLS_PORT": str(free_port()),
        "BOTBRIDGE_BOT_URI": f"sip:voicebot@127.0.0.1:{bot_port}",
        "BOTBRIDGE_AGENT_CONTACT": f"sip:agent1@127.0.0.1:{agent_port}",
        "BOTBRIDGE_RTP_START": str(rtp_start),
        "BOTBRIDGE_RTP_END": str(rtp_start + RTP_RANGE_SIZE - 1),
        "BOTBRIDGE_HTTP_PORT": str(free_port()),
    }


# RTP + RTCP port pairs for 2,000 media streams: 500 concurrent calls of three legs (caller,
# bot, agent) fit, which is what `make bench` holds
RTP_RANGE_SIZE = 4000


def free_rtp_range() -> int:
    """Start of an even RTP port block unlikely to be used by another stack on this host."""
    for _ in range(50):
        start = free_port(udp_too=True)
        start -= start % 2
        if start + RTP_RANGE_SIZE < 65535:
            return start
    raise StackError("no free RTP port range")


def port_of(uri: str) -> int:
    tail = uri.rsplit("@", 1)[-1].split(";", 1)[0]
    return int(tail.rsplit(":", 1)[1]) if ":" in tail else 5060


# -- make up / down / status / logs / restart ---------------------------------------------


@dataclass(frozen=True)
class StackPlaces:
    """Where the stack of `make up` lives: its run directory (``stack.json``) and its state
    directory (ARI password, records, tokens)."""

    run_dir: Path
    state_dir: Path

    @property
    def info_path(self) -> Path:
        return self.run_dir / RUN_INFO

    @property
    def env(self) -> dict[str, str]:
        """The environment the stack's app runs with, so that it reads this state directory."""
        return {"BOTBRIDGE_STATE_DIR": str(self.state_dir)}


def stack_places(env: Mapping[str, str] | None = None) -> StackPlaces:
    """The one decision of where the stack is, the same for up, restart, status, down and
    logs: ``BOTBRIDGE_RUN_DIR`` (default ``./var/run``) and ``BOTBRIDGE_STATE_DIR`` (default
    ``./var``, the application's own default), both from the directory `make` runs in."""
    env = os.environ if env is None else env
    here = Path.cwd()
    return StackPlaces(
        run_dir=Path(env.get("BOTBRIDGE_RUN_DIR") or here / "var" / "run").resolve(),
        state_dir=Path(env.get("BOTBRIDGE_STATE_DIR") or here / "var").resolve(),
    )


def stack_settings(config: Config) -> dict[str, str]:
    """What a restart must keep: the state directory (hence the ARI password file), the
    addresses Asterisk's rendered configuration and the clients use, and the store. `make up`
    records them in ``stack.json``; `make restart` refuses a shell that decides others."""
    return {
        "state_dir": str(config.state_dir),
        "ari_url": config.ari.url,
        "sip": f"{config.sip.host}:{config.sip.port}",
        "sip_tls_port": str(config.sip.tls_port),
        "rtp": f"{config.sip.rtp_start}-{config.sip.rtp_end}",
        "http": f"{config.http.host}:{config.http.port}",
        "store": mask_url(config.store.url),
    }


def instance_root(runtime: Runtime, places: StackPlaces) -> Path:
    """Instance directory of the stack kept in the run directory: one per run directory, so
    a second checkout (or a test with its own BOTBRIDGE_RUN_DIR) never renders over a
    running stack."""
    digest = hashlib.sha256(str(places.run_dir).encode()).hexdigest()[:12]
    return runtime.scratch_root() / f"devstack-{digest}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:]) or ["status"]
    command = args[0]
    try:
        if command == "up":
            return _up()
        if command == "down":
            return _down()
        if command == "status":
            return _status()
        if command == "logs":
            return _logs()
        if command == "restart":
            return _restart()
    except (StackError, RuntimeUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"usage: python -m devtools.devstack up|down|status|logs|restart (got {command!r})",
        file=sys.stderr,
    )
    return 2


def _up() -> int:
    places = stack_places()
    if places.info_path.exists() and _alive(json.loads(places.info_path.read_text())):
        print(f"already up; run directory {places.run_dir}")
        return 0
    runtime = select_runtime()
    # the Asterisk instance's files must be visible to the runtime (a chroot sees only its tree)
    root = instance_root(runtime, places)
    stack = build_stack(runtime, root, free_ports=False, extra_env=places.env)
    print(f"starting Asterisk ({runtime.describe()}) with config rendered into {root}/etc")
    stack.instance.start(detach=True)
    print(
        f"Asterisk up: SIP {stack.sip_remote} (udp/tcp), TLS port {stack.config.sip.tls_port}"
        f", ARI {stack.config.ari.url}"
    )
    try:
        stack.start_app(detach=True)
    except StackError:
        stack.instance.stop()
        raise
    assert stack.app_proc is not None
    places.run_dir.mkdir(parents=True, exist_ok=True)
    link = places.run_dir / "instance"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(root)
    info = {
        "root": str(root),
        "app_pid": stack.app_proc.pid,
        "conf": stack.instance.conf_path,
        "runtime": runtime.name,
        "asterisk_pid": stack.instance.pid,
        "settings": stack_settings(stack.config),
    }
    places.info_path.write_text(json.dumps(info, indent=2))
    print(f"app up (pid {stack.app_proc.pid}); logs under {root}; state in {places.state_dir}")
    print(f"run directory: {places.run_dir}  (make logs, make down)")
    return 0


def stop_node(runtime: Runtime, app_pid: int, conf: str) -> None:
    """SIGTERM to a background app (it drains and exits), then Asterisk stopped at once."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(app_pid, signal.SIGTERM)
    subprocess.run(
        runtime.command(["asterisk", "-C", conf, "-rx", "core stop now"]),
        capture_output=True,
        check=False,
        timeout=30,
    )


def _down() -> int:
    info_path = stack_places().info_path
    if not info_path.exists():
        print("not up")
        return 0
    info = json.loads(info_path.read_text())
    runtime = select_runtime(info.get("runtime"), build=False)
    stop_node(runtime, int(info["app_pid"]), info["conf"])
    pids = [int(info[key]) for key in ("app_pid", "asterisk_pid") if info.get(key)]
    _wait_gone(pids, APP_STOP_TIMEOUT_SECONDS)
    info_path.unlink()
    print("stopped Asterisk and the app" + (" (still exiting)" if _alive(info) else ""))
    return 0


def _restart() -> int:
    """A new app takes the calls over (``--take-over``, docs/operations.md "The handover"),
    once its settings match the ones `make up` recorded and Asterisk accepts its password."""
    places = stack_places()
    if not places.info_path.exists():
        print("not up; `make up` first", file=sys.stderr)
        return 1
    info = json.loads(places.info_path.read_text())
    runtime = select_runtime(info.get("runtime"), build=False)
    stack = build_stack(runtime, Path(info["root"]), free_ports=False, extra_env=places.env)
    check_same_stack(info, stack.config)
    pid = int(info["app_pid"])
    print(f"handing the calls of the app (pid {pid}) over to a new app")
    started = time.monotonic()
    try:
        stack.start_app(detach=True, take_over_from=pid)
    except StackError as exc:
        _wait_gone([pid], LET_GO_SECONDS)  # replaced before the new app failed, it exits
        if _pid_alive(pid):
            raise StackError(f"{exc}\nthe running app (pid {pid}) was left alone") from exc
        print(f"the new app failed after the old one let go ({exc}); starting another")
        stack.start_app(detach=True)
    assert stack.app_proc is not None
    places.info_path.write_text(json.dumps({**info, "app_pid": stack.app_proc.pid}, indent=2))
    print(f"app up again (pid {stack.app_proc.pid}), ready in {time.monotonic() - started:.1f} s")
    return 0


def check_same_stack(info: Mapping[str, Any], config: Config) -> None:
    """Raise StackError, naming what differs, when the app `make restart` would start does
    not fit the running stack: other settings than `make up` recorded (another state
    directory, so another ARI password and store; other ports), or a password Asterisk
    refuses. Nothing is stopped before this passes."""
    recorded: Mapping[str, str] = info.get("settings") or {}
    now = stack_settings(config)
    differ = [
        f"{key} {recorded[key]} -> {now[key]}" for key in recorded if recorded[key] != now.get(key)
    ]
    if differ:
        raise StackError(
            "this shell would restart the app with other settings than `make up` used ("
            + "; ".join(differ)
            + "); run `make restart` with the environment of `make up`, or `make down` and "
            "`make up` to change them. The running app was left alone."
        )

    async def ari_accepts() -> None:
        async with ari_rest(config) as ari:
            await ari.asterisk_info()

    try:
        asyncio.run(ari_accepts())
    except AriError as exc:
        raise StackError(
            f"Asterisk at {config.ari.url} refuses the ARI credentials the new app would use "
            f"({exc}); the running app was left alone"
        ) from exc


def _gone(pid: int | None, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None and proc.pid == pid:
        return proc.poll() is not None  # a child of ours: reaped through its Popen
    return pid is None or not _pid_alive(pid)


def _wait_gone(pids: Sequence[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(POLL_SECONDS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child of this process that exited is a zombie until reaped: not alive for us
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    return True


def _status() -> int:
    info_path = stack_places().info_path
    if not info_path.exists():
        print("not up")
        return 1
    info = json.loads(info_path.read_text())
    print(json.dumps({**info, "alive": _alive(info)}, indent=2))
    return 0 if _alive(info) else 1


def _logs() -> int:
    info_path = stack_places().info_path
    if not info_path.exists():
        print("not up; nothing to show", file=sys.stderr)
        return 1
    root = Path(json.loads(info_path.read_text())["root"])
    files = [str(root / "app.log"), str(root / "log" / "messages.log")]
    return subprocess.call(["tail", "-n", "50", "-F", *files])


def _alive(info: Mapping[str, object]) -> bool:
    for key in ("app_pid", "asterisk_pid"):
        pid = info.get(key)
        if not pid:
            continue
        try:
            os.kill(int(str(pid)), 0)
        except (ProcessLookupError, ValueError):
            return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
