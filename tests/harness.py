"""Test harness: a real Asterisk 22 instance on free loopback ports, the Stasis app as a
subprocess (as operators run it), SIPp parties, and ``until`` instead of fixed sleeps."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ari_app.ari import AriRest
from ari_app.config import Config, load_config
from ari_app.runtime import Runtime
from ari_app.sipp import Sipp, SippRun
from ari_app.stack import AsteriskInstance, free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
DEFAULT_UNTIL_TIMEOUT = 15.0
POLL_INTERVAL = 0.1
APP_READY_TIMEOUT = 15.0

T = TypeVar("T")


async def until(
    condition: Callable[[], Awaitable[T]] | Callable[[], T],
    timeout: float = DEFAULT_UNTIL_TIMEOUT,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``message``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        last = result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message} (last={last!r})"
            )
        await asyncio.sleep(POLL_INTERVAL)


def wait_process(run: SippRun, timeout: float) -> int:
    return run.wait(timeout)


@dataclass
class Stack:
    """One Asterisk + app, with the ports its SIPp parties must use."""

    runtime: Runtime
    instance: AsteriskInstance
    config: Config
    env: dict[str, str]
    sip_port: int
    bot_port: int
    agent_port: int
    app_proc: subprocess.Popen[bytes] | None = None
    app_log: Path | None = None

    @property
    def sip_remote(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def rest(self) -> AriRest:
        return AriRest(self.config.ari_url, self.config.ari["username"], self.config.ari_password)

    def start_app(self) -> None:
        assert self.app_log is not None
        self.app_proc = subprocess.Popen(
            [sys.executable, "-m", "ari_app.cli", "run"],
            env=self.env,
            stdout=self.app_log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + APP_READY_TIMEOUT
        while time.monotonic() < deadline:
            if "registered" in self.app_log.read_text(errors="replace"):
                return
            if self.app_proc.poll() is not None:
                raise RuntimeError(f"app exited: {self.app_log.read_text()[-2000:]}")
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"app did not register with ARI: {self.app_log.read_text()[-2000:]}")

    def stop_app(self) -> None:
        if self.app_proc and self.app_proc.poll() is None:
            self.app_proc.send_signal(signal.SIGTERM)
            try:
                self.app_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.app_proc.kill()
                self.app_proc.wait()

    def app_log_text(self) -> str:
        return self.app_log.read_text(errors="replace") if self.app_log else ""

    def sipp(self) -> Sipp:
        return Sipp(self.runtime, SCENARIOS, self.instance.root / "sipp")


def make_stack(runtime: Runtime, name: str, extra_env: dict[str, str] | None = None) -> Stack:
    sip_port = free_port(udp_too=True)
    bot_port = free_port(udp_too=True)
    agent_port = free_port(udp_too=True)
    ari_port = free_port()
    rtp_start = 20000 + (os.getpid() % 200) * 100
    root = runtime.scratch_root() / f"test-{name}-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    env = {
        **os.environ,
        "BOTBRIDGE_STATE_DIR": str(root / "state"),
        "BOTBRIDGE_ARI_PASSWORD": uuid.uuid4().hex,
        "BOTBRIDGE_ARI_URL": f"http://127.0.0.1:{ari_port}/ari",
        "BOTBRIDGE_SIP_PORT": str(sip_port),
        "BOTBRIDGE_SIP_TLS_PORT": str(free_port()),
        "BOTBRIDGE_BOT_URI": f"sip:voicebot@127.0.0.1:{bot_port}",
        "BOTBRIDGE_AGENT_CONTACT": f"sip:agent1@127.0.0.1:{agent_port}",
        "BOTBRIDGE_RTP_START": str(rtp_start),
        "BOTBRIDGE_RTP_END": str(rtp_start + 99),
        "BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4",
        **(extra_env or {}),
    }
    config = load_config(env=env)
    instance = AsteriskInstance(runtime, config, root)
    stack = Stack(runtime, instance, config, env, sip_port, bot_port, agent_port)
    stack.app_log = root / "app.log"
    return stack
