"""Run Asterisk with the shipped configuration (ari_app/asterisk) for the dev stack and tests.

Each instance renders the package's templates (the same renderer as ``ari-app
render-config``) into its own directory tree and runs on free loopback ports, so that two
runs never collide.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ari_app.asterisk import RenderError, render_instance
from ari_app.config import Config
from devtools.runtime import Runtime

log = logging.getLogger(__name__)

BOOT_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 15


class StackError(RenderError):
    """Asterisk did not come up or go down as asked; the message points at the log."""


@dataclass
class AsteriskInstance:
    """One Asterisk process with its own directory tree under the runtime's scratch area."""

    runtime: Runtime
    config: Config
    root: Path  # host path of the instance directory

    def __post_init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._console_log = self.root / "log" / "console.log"

    @property
    def conf_path(self) -> str:
        return self.runtime.runtime_path(self.root / "etc" / "asterisk.conf")

    @property
    def messages_log(self) -> Path:
        return self.root / "log" / "messages.log"

    def render_config(self) -> None:
        try:
            render_instance(
                self.config,
                self.root,
                module_dir=self.runtime.module_dir(),
                path_of=self.runtime.runtime_path,
            )
        except StackError:
            raise
        except RenderError as exc:
            raise StackError(str(exc)) from exc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, *, detach: bool = False) -> None:
        self.render_config()
        argv = self.runtime.command(["asterisk", "-C", self.conf_path, "-f", "-n", "-g"])
        log.info("starting Asterisk: %s", " ".join(argv))
        # the child keeps its own copy of the descriptor; ours is closed once it has started
        with self._console_log.open("ab") as log_fh:
            self._proc = subprocess.Popen(
                argv,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,  # `make up`: Asterisk outlives the command
            )
        self.wait_booted()

    def wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise StackError(
                    f"Asterisk exited with code {self._proc.returncode} while booting; "
                    f"see {self._console_log}"
                )
            out = self.cli("core waitfullybooted", timeout=BOOT_TIMEOUT_SECONDS, check=False)
            if out.returncode == 0 and "fully booted" in out.stdout.lower():
                return
            time.sleep(0.2)
        raise StackError(
            f"Asterisk not fully booted after {BOOT_TIMEOUT_SECONDS}s; see {self._console_log}"
        )

    def cli(
        self, command: str, *, timeout: float = 10, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = self.runtime.command(["asterisk", "-C", self.conf_path, "-rx", command])
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise StackError(f"asterisk -rx {command!r} failed: {result.stderr.strip()}")
        return result

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, calls die with it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self.cli("core stop now", check=False)
            return
        self.cli("core stop now", check=False)
        try:
            self._proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("Asterisk did not stop in %ss; killing it", STOP_TIMEOUT_SECONDS)
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def free_port(host: str = "127.0.0.1", *, udp_too: bool = False) -> int:
    """A port free on host for TCP (and UDP when asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise StackError("no free port found on " + host)
