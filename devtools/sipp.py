"""Run SIPp scenarios (kept as data, one folder per scenario) and read what crossed the wire.

Used by the integration tests and by ``make demo``. Each run gets its own directory under the
runtime's scratch area, holding a copy of the scenario, ``-trace_msg`` and error logs.
"""

from __future__ import annotations

import errno
import re
import shutil
import socket
import subprocess
import time
import uuid
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from devtools.runtime import Runtime

SIPP_DEFAULT_TIMEOUT_SECONDS = 60
# a party with no remote (a UAS: bot, agent) must listen before anything calls it; SIPp in
# the runtime can take a while to start on a loaded machine
SIPP_BIND_TIMEOUT_SECONDS = 10.0
SIPP_BIND_POLL_SECONDS = 0.02
TONE_SECONDS = 4

_DIRECTION = re.compile(r"message (?P<dir>sent|received)[^\n]*\n", re.IGNORECASE)
# the dashes line SIPp writes before each message; the group is the time stamp after it
_SEPARATOR = re.compile(r"^-{10,} (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from a SIPp trace: direction, first line and headers."""

    direction: str  # "sent" or "received", from the SIPp party's point of view
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str
    # the text SIPp writes after the dashes that precede the message, e.g.
    # "2026-11-23T23:09:49.442381Z"; lets traces of several parties be merged in time order
    timestamp: str = ""

    @property
    def at(self) -> float:
        """When SIPp sent or received it, in Unix seconds (microsecond resolution)."""
        return (
            datetime.strptime(self.timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
            .replace(tzinfo=UTC)
            .timestamp()
        )

    @property
    def method(self) -> str | None:
        first = self.start_line.split(" ", 1)[0]
        return None if first.startswith("SIP/") else first

    @property
    def status(self) -> int | None:
        if self.start_line.startswith("SIP/2.0 "):
            return int(self.start_line.split()[1])
        return None

    @property
    def cseq_method(self) -> str:
        return (self.header("CSeq") or " ").split()[-1]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def describe(self) -> str:
        arrow = "->" if self.direction == "sent" else "<-"
        return f"{arrow} {self.start_line}"


@dataclass(frozen=True)
class SippCommand:
    """What a SIPp party is started with. ``argv`` is the one place a SIPp command line is
    written: the tests' and the demo's parties (``Sipp.start``) and the bench's
    (``devtools.bench_parties``) all go through it. An option left at ``None`` is not given."""

    scenario: Path
    local_port: int
    local_ip: str = "127.0.0.1"
    transport: str = "u1"
    calls: int = 1
    timeout_seconds: int = SIPP_DEFAULT_TIMEOUT_SECONDS
    # (first, last) RTP port of the party's media
    media_ports: tuple[int, int] | None = None
    control_port: int | None = None  # -cp: the UDP port SIPp takes commands on ("q")
    recv_timeout_ms: int | None = None
    socket_buffer: int | None = None  # -buff_size, bytes
    message_file: Path | None = None  # -trace_msg: every message sent and received
    error_file: Path | None = None  # -trace_err
    stat_file: Path | None = None  # -trace_stat, every second (-fd 1)
    screen_file: Path | None = None  # -trace_screen: the screen when SIPp exits
    auto_answer: bool = False  # -aa: a stray NOTIFY/INFO/UPDATE gets 200, not a failed call
    rate: float | None = None  # calls per second (-r, per -rp 1000 ms)
    limit: int | None = None  # -l: calls open at once
    pause_ms: int | None = None  # -d: the scenario's default pause
    service: str | None = None  # -s: the request user of the calls placed
    keys: Mapping[str, str] = field(default_factory=dict)  # -key: [name] in the scenario
    extra: Sequence[str] = ()
    remote: str | None = None  # host:port called; None for a party that only answers

    def argv(self, runtime_path: Callable[[Path], str]) -> list[str]:
        """The command line, with paths as the runtime sees them (``runtime_path``)."""
        argv = ["sipp", "-sf", runtime_path(self.scenario), "-i", self.local_ip]
        argv += ["-p", str(self.local_port), "-t", self.transport, "-m", str(self.calls)]
        argv += ["-nostdin", "-timeout", f"{self.timeout_seconds}s", "-timeout_error"]
        if self.media_ports is not None:
            argv += ["-min_rtp_port", str(self.media_ports[0])]
            argv += ["-max_rtp_port", str(self.media_ports[1])]
        if self.control_port is not None:
            argv += ["-cp", str(self.control_port)]
        if self.recv_timeout_ms is not None:
            argv += ["-recv_timeout", str(self.recv_timeout_ms)]
        if self.socket_buffer is not None:
            argv += ["-buff_size", str(self.socket_buffer)]
        if self.message_file is not None:
            argv += ["-trace_msg", "-message_file", runtime_path(self.message_file)]
        if self.error_file is not None:
            argv += ["-trace_err", "-error_file", runtime_path(self.error_file)]
        if self.stat_file is not None:
            argv += ["-trace_stat", "-stf", runtime_path(self.stat_file), "-fd", "1"]
        if self.screen_file is not None:
            argv += ["-trace_screen", "-screen_file", runtime_path(self.screen_file)]
        if self.auto_answer:
            argv.append("-aa")
        if self.rate is not None:
            argv += ["-r", f"{self.rate:g}", "-rp", "1000"]
        if self.limit is not None:
            argv += ["-l", str(self.limit)]
        if self.pause_ms is not None:
            argv += ["-d", str(self.pause_ms)]
        if self.service:
            argv += ["-s", self.service]
        for key, value in self.keys.items():
            argv += ["-key", key, value]
        argv += list(self.extra)
        if self.remote:
            argv.append(self.remote)
        return argv


def spawn(
    runtime: Runtime,
    argv: Sequence[str],
    stdout_path: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start SIPp in the runtime, its output (stdout and stderr) in ``stdout_path``."""
    # the child keeps its own copy of the descriptor; ours is closed once it has started
    with stdout_path.open("wb") as stdout:
        return subprocess.Popen(
            runtime.command(list(argv)),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec_fn,
        )


@dataclass
class SippRun:
    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    argv: list[str]
    returncode: int | None = None
    _stdout_path: Path = field(default_factory=Path)

    def wait(self, timeout: float = SIPP_DEFAULT_TIMEOUT_SECONDS) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        return self.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def messages(self) -> list[SipMessage]:
        return parse_trace(self.trace_text())

    def trace_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_messages.log"))
        )

    def errors_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_errors.log"))
        )

    def output(self) -> str:
        return self._stdout_path.read_text(errors="replace") if self._stdout_path.exists() else ""

    def report(self) -> str:
        """What a failing test should print: exit code, errors and the message list."""
        lines = [f"sipp {self.name} exit={self.returncode}"]
        lines += [m.describe() for m in self.messages()]
        errors = self.errors_text().strip()
        if errors:
            lines.append("errors:\n" + errors[-3000:])
        out = self.output().strip()
        if out:
            lines.append("output:\n" + out[-2000:])
        return "\n".join(lines)


class Sipp:
    """Starts SIPp parties inside a runtime."""

    def __init__(self, runtime: Runtime, scenarios_dir: Path, run_root: Path) -> None:
        self.runtime = runtime
        self.scenarios_dir = scenarios_dir
        self.run_root = run_root
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.runs: list[SippRun] = []
        self._tone = self.run_root / "tone.wav"
        if not self._tone.exists():
            write_tone(self._tone)

    def start(
        self,
        scenario: str,
        *,
        local_port: int,
        remote: str | None = None,
        local_ip: str = "127.0.0.1",
        service: str | None = None,
        keys: Mapping[str, str] | None = None,
        transport: str = "u1",
        extra: Sequence[str] = (),
        calls: int = 1,
        rate: float | None = None,
        limit: int | None = None,
        timeout: float = SIPP_DEFAULT_TIMEOUT_SECONDS,
    ) -> SippRun:
        """Start ``<scenarios_dir>/<scenario>.xml`` (e.g. ``escalate/bot``) in the background;
        ``rate`` (calls/s) and ``limit`` (calls open at once) for a party placing calls."""
        source = self.scenarios_dir / f"{scenario}.xml"
        if not source.exists():
            raise FileNotFoundError(f"no SIPp scenario {source}")
        name = scenario.replace("/", "-")
        workdir = self.run_root / f"{name}-{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True)
        shutil.copy(source, workdir / "scenario.xml")
        shutil.copy(self._tone, workdir / "tone.wav")
        command = SippCommand(
            scenario=workdir / "scenario.xml",
            local_ip=local_ip,
            local_port=local_port,
            transport=transport,
            calls=calls,
            rate=rate,
            limit=limit,
            timeout_seconds=int(timeout),
            media_ports=(local_port + 1000, local_port + 1100),
            message_file=workdir / f"{name}_messages.log",
            error_file=workdir / f"{name}_errors.log",
            service=service,
            keys={"tone": self.runtime.runtime_path(workdir / "tone.wav"), **(keys or {})},
            extra=tuple(extra),
            remote=remote,
        )
        stdout_path = workdir / "stdout.log"
        argv = command.argv(self.runtime.runtime_path)
        proc = spawn(self.runtime, argv, stdout_path)
        run = SippRun(name=name, proc=proc, workdir=workdir, argv=argv)
        run._stdout_path = stdout_path
        self.runs.append(run)
        if remote is None:
            wait_bound(local_ip, local_port, udp=transport.startswith("u"), run=run)
        return run

    def stop_all(self) -> None:
        """Stop every party this started that is still running."""
        for run in self.runs:
            run.stop()


class SippProcess(Protocol):
    """A started SIPp party, as ``wait_bound`` watches it (SippRun; the bench's Party)."""

    name: str

    @property
    def running(self) -> bool: ...

    def report(self) -> str: ...


def wait_bound(ip: str, port: int, *, udp: bool, run: SippProcess) -> None:
    """Return once something listens on ``ip:port`` (our own bind attempt is refused), so a
    UAS is ready before a caller starts; raise if its SIPp exited or never bound."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    deadline = time.monotonic() + SIPP_BIND_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((ip, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return
                raise
        if not run.running:
            raise RuntimeError(f"SIPp {run.name} exited before it listened:\n{run.report()}")
        time.sleep(SIPP_BIND_POLL_SECONDS)
    raise RuntimeError(f"SIPp {run.name} did not listen on {ip}:{port} within the bind timeout")


def parse_trace(text: str) -> list[SipMessage]:
    """Parse a SIPp -trace_msg log into messages, in order."""
    messages: list[SipMessage] = []
    # with one group, re.split alternates: text before the first separator, then stamp, chunk
    parts = _SEPARATOR.split(text)
    stamped = [("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]
    for stamp, chunk in stamped:
        match = _DIRECTION.search(chunk[:200])
        if not match:
            continue
        direction = match.group("dir").lower()
        lines = chunk[match.end() :].strip("\n").split("\n")
        # skip anything SIPp writes before the start line
        while lines and not re.match(r"^(SIP/2\.0 \d{3}|[A-Z]+ \S+ SIP/2\.0)", lines[0].strip()):
            lines.pop(0)
        if not lines:
            continue
        start = lines[0].strip()
        headers: list[tuple[str, str]] = []
        body_lines: list[str] = []
        in_body = False
        for line in lines[1:]:
            line = line.rstrip("\r")
            if in_body:
                body_lines.append(line)
            elif not line.strip():
                in_body = True
            elif ":" in line:
                key, _, value = line.partition(":")
                headers.append((key.strip(), value.strip()))
        messages.append(
            SipMessage(
                direction,
                start,
                tuple(headers),
                "\n".join(body_lines).strip(),
                timestamp=stamp.strip(),
            )
        )
    return messages


def write_tone(path: Path, seconds: int = TONE_SECONDS) -> None:
    """A 440 Hz tone as 8 kHz mu-law WAV, the payload SIPp's rtp_stream sends as PCMU."""
    import math

    samples = bytearray()
    for n in range(8000 * seconds):
        value = int(8000 * math.sin(2 * math.pi * 440 * n / 8000))
        samples.append(_linear_to_ulaw(value))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.setcomptype("NONE", "not compressed")
        wav.writeframes(bytes(samples))


def _linear_to_ulaw(sample: int) -> int:
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF
