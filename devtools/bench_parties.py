"""The bench's SIPp parties (caller, bot, agent): started through ``devtools.sipp``'s one
command builder, stopped through their control port, read back (statistics, traces)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools.bench_analysis import SippCounts, parse_screen_counts, parse_sipp_stat
from devtools.bench_host import raise_nofile
from devtools.runtime import Runtime
from devtools.sipp import SipMessage, SippCommand, parse_trace, spawn, wait_bound
from devtools.stack import StackError, free_port

HERE = Path(__file__).resolve().parent
# the load scenarios are shared with the load regression test (tests/integration/test_load.py)
SCENARIOS_DIR = HERE.parent / "tests" / "scenarios" / "load"
# the flows a step runs: the bot hangs up after talking, or REFERs the caller to an agent
FLOWS = ("resolve", "transfer")
SERVICE_NUMBER = "5551000"
RECV_TIMEOUT_MS = 20000
# SIPp's socket buffers (capped by net.core.rmem_max): a burst must not overflow them
SIPP_SOCKET_BUFFER = 4 * 1024 * 1024
# a caller is checked this long after its start: one that exits at once (bad option, port
# taken) fails the step there
CALLER_START_CHECK_SECONDS = 0.1


@dataclass
class Party:
    """One SIPp process (caller, bot or agent) of a step, with its files."""

    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    control_port: int
    traced: bool
    returncode: int | None = None
    cpu_seconds: float = 0.0

    def poll(self) -> int | None:
        """Reap the process when it has exited (os.wait4 also gives its CPU time)."""
        if self.returncode is not None:
            return self.returncode
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return self.returncode

    @property
    def running(self) -> bool:
        return self.poll() is None

    def report(self) -> str:
        """The end of its output (what SIPp printed before it exited)."""
        return (self.workdir / "stdout.log").read_text(errors="replace")[-1500:]

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return True
            time.sleep(0.05)
        return not self.running

    def stop(self) -> None:
        """Quit SIPp: its control port's "q" (softly, stats written), then signals."""
        if not self.running:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(2):  # a second "q" quits without waiting for open calls
                with contextlib.suppress(OSError):
                    sock.sendto(b"q", ("127.0.0.1", self.control_port))
                if self.wait(2):
                    return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            if self.wait(3):
                return

    def counts(self) -> SippCounts | None:
        stat = self.workdir / "stat.csv"
        counts = parse_sipp_stat(stat.read_text(errors="replace")) if stat.exists() else None
        if counts is None:
            screen = self.workdir / "screen.log"
            if screen.exists():
                counts = parse_screen_counts(screen.read_text(errors="replace"))
        return counts

    def messages(self) -> list[SipMessage]:
        path = self.workdir / "messages.log"
        return parse_trace(path.read_text(errors="replace")) if path.exists() else []

    def errors_tail(self, chars: int = 1500) -> str:
        path = self.workdir / "errors.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def free_udp_block(size: int = 100) -> int:
    """Start of ``size`` consecutive UDP ports free on loopback (SIPp's media ports)."""
    for _ in range(50):
        start = free_port(udp_too=True)
        if start + size >= 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(start, start + size, 2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise StackError("no free block of UDP ports for SIPp media")


class SippLauncher:
    """Starts SIPp parties of the bench inside the runtime; files under ``run_root``."""

    def __init__(self, runtime: Runtime, run_root: Path) -> None:
        self.runtime = runtime
        self.run_root = run_root
        self._count = 0

    def start(
        self,
        scenario: str,
        *,
        name: str,
        local_port: int,
        calls: int,
        timeout_s: float,
        remote: str | None = None,
        rate: float | None = None,
        limit: int | None = None,
        pause_ms: int | None = None,
        keys: Mapping[str, str] | None = None,
        trace: bool = False,
        recv_timeout_ms: int = RECV_TIMEOUT_MS,
        uas: bool = False,
    ) -> Party:
        self._count += 1
        workdir = self.run_root / f"{self._count:03d}-{name}"
        workdir.mkdir(parents=True)
        shutil.copy(SCENARIOS_DIR / f"{scenario}.xml", workdir / "scenario.xml")
        control_port = free_port(udp_too=True)
        media = free_udp_block()
        command = SippCommand(
            scenario=workdir / "scenario.xml",
            local_port=local_port,
            calls=calls,
            timeout_seconds=max(1, int(timeout_s)),
            media_ports=(media, media + 99),
            control_port=control_port,
            recv_timeout_ms=recv_timeout_ms,
            socket_buffer=SIPP_SOCKET_BUFFER,
            message_file=workdir / "messages.log" if trace else None,
            error_file=workdir / "errors.log",
            stat_file=workdir / "stat.csv",
            screen_file=workdir / "screen.log",
            auto_answer=uas,
            rate=rate,
            limit=limit,
            pause_ms=pause_ms,
            service=SERVICE_NUMBER if remote else None,
            keys=dict(keys or {}),
            remote=remote,
        )
        argv = command.argv(self.runtime.runtime_path)
        proc = spawn(self.runtime, argv, workdir / "stdout.log", preexec_fn=raise_nofile)
        party = Party(name, proc, workdir, control_port, trace)
        if uas:  # the bot and the agent listen before the caller starts
            try:
                wait_bound("127.0.0.1", local_port, udp=True, run=party)
            except (RuntimeError, OSError) as exc:
                raise StackError(str(exc)) from exc
        else:
            time.sleep(CALLER_START_CHECK_SECONDS)
        if party.poll() is not None:
            raise StackError(f"SIPp {name} exited at once ({party.returncode}):\n{party.report()}")
        return party
