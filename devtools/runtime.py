"""Where Asterisk 22 and SIPp come from: the runtime providers.

Three providers, chosen automatically or by ``BOTBRIDGE_RUNTIME`` (auto|system|rootfs|docker):

- ``system``: ``asterisk`` (>= 22.8) and ``sipp`` already on PATH.
- ``rootfs``: a Debian sid root filesystem with asterisk, asterisk-modules and sip-tester,
  built once with mmdebstrap (from the host's Debian mirror, devtools/apt_sources.py) into a
  cache directory and reused; programs run through chroot (root only). Files the programs
  must read live under the root filesystem's ``/srv``.
- ``docker``: an Asterisk 22 container (testcontainers) sharing the host network; only where a
  Docker engine answers.

Every provider exposes the same small surface: wrap a command so it runs in the runtime, map
a host path to the path the runtime sees, and report the Asterisk version.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ari_app.asterisk import RenderError, find_module_dir
from devtools import prerequisites
from devtools.apt_sources import NoMirror, debian_mirror

MIN_ASTERISK_VERSION = (22, 8)
ROOTFS_PACKAGES = ("asterisk", "asterisk-modules", "sip-tester")
ROOTFS_SUITE = "sid"
DOCKER_IMAGE_DEFAULT = "botbridge-asterisk:22"
VERSION_PROBE_TIMEOUT_SECONDS = 30
ROOTFS_BUILD_TIMEOUT_SECONDS = 1800

TextLog = Callable[[str], None]

_VERSION_RE = re.compile(r"Asterisk (?:certified[/-])?(\d+)\.(\d+)(?:\.(\d+))?")


class RuntimeUnavailable(RuntimeError):
    """The requested provider cannot run here; the message says why and what to do."""


def cache_dir() -> Path:
    """Directory outside the repository where built runtimes are kept."""
    explicit = os.environ.get("BOTBRIDGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "botbridge"


def parse_asterisk_version(text: str) -> tuple[int, int, int]:
    """Parse ``asterisk -V`` output; raise RuntimeUnavailable when it is not Asterisk."""
    match = _VERSION_RE.search(text)
    if not match:
        raise RuntimeUnavailable(f"cannot read an Asterisk version from {text.strip()!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def check_version(version: tuple[int, int, int], provider: str) -> None:
    if version[:2] < MIN_ASTERISK_VERSION:
        found = ".".join(map(str, version))
        need = ".".join(map(str, MIN_ASTERISK_VERSION))
        raise RuntimeUnavailable(
            f"{provider} runtime has Asterisk {found}, older than the {need} this bridge needs "
            "(PJSIP_INHERITABLE_HEADER, transfer data); install Asterisk >= 22.8 or choose "
            "another provider with BOTBRIDGE_RUNTIME=rootfs"
        )


class Runtime(abc.ABC):
    """A place where ``asterisk`` and ``sipp`` can run."""

    name: str

    @abc.abstractmethod
    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside the runtime."""

    @abc.abstractmethod
    def scratch_root(self) -> Path:
        """Host directory whose contents the runtime can read and write."""

    @abc.abstractmethod
    def runtime_path(self, host_path: Path) -> str:
        """How the runtime names a host path under scratch_root()."""

    def module_dir(self) -> str:
        try:
            return find_module_dir(self._host_root())
        except RenderError as exc:
            raise RuntimeUnavailable(f"{self.name}: {exc}") from exc

    def _host_root(self) -> Path:
        return Path("/")

    def asterisk_version(self) -> tuple[int, int, int]:
        try:
            out = subprocess.run(
                self.command(["asterisk", "-V"]),
                capture_output=True,
                text=True,
                timeout=VERSION_PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeUnavailable(f"{self.name}: cannot run asterisk -V: {exc}") from exc
        version = parse_asterisk_version(out.stdout + out.stderr)
        check_version(version, self.name)
        return version

    def describe(self) -> str:
        version = ".".join(map(str, self.asterisk_version()))
        return f"runtime={self.name} asterisk={version}"


class SystemRuntime(Runtime):
    name = "system"

    def __init__(
        self, scratch: Path | None = None, tools: Sequence[str] = ("asterisk", "sipp")
    ) -> None:
        self._scratch = scratch or cache_dir() / "scratch"
        for tool in tools:
            if shutil.which(tool) is None:
                raise RuntimeUnavailable(f"system runtime: {tool} is not on PATH")

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def scratch_root(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def runtime_path(self, host_path: Path) -> str:
        return str(host_path)


class RootfsRuntime(Runtime):
    name = "rootfs"

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / f"rootfs-{ROOTFS_SUITE}"

    def is_built(self) -> bool:
        return (self.root / "usr/sbin/asterisk").exists() and (self.root / "usr/bin/sipp").exists()

    def ensure(self, log: TextLog | None = None) -> None:
        """Build the root filesystem unless a complete one is already cached."""
        log = log or _stderr
        if self.is_built():
            log(f"rootfs runtime: reusing {self.root}")
            return
        if os.geteuid() != 0:
            raise RuntimeUnavailable(
                "rootfs runtime: building and entering a root filesystem needs root "
                "(chroot); run as root, or install asterisk >= 22.8 and sipp and set "
                "BOTBRIDGE_RUNTIME=system"
            )
        try:
            mirror = debian_mirror()
            prerequisites.install({"mmdebstrap": prerequisites.TOOLS["mmdebstrap"]}, log=log)
        except (NoMirror, prerequisites.MissingTool) as exc:
            raise RuntimeUnavailable(f"rootfs runtime: {exc}") from exc
        build_dir = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(build_dir, ignore_errors=True)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        log(
            f"rootfs runtime: building Debian {ROOTFS_SUITE} with {', '.join(ROOTFS_PACKAGES)} "
            f"from {mirror} into {self.root} (about a minute, ~400 MB)"
        )
        _run_logged(
            [
                "mmdebstrap",
                "--variant=apt",
                # the sid Release file reachable here is past its Valid-Until date
                '--aptopt=Acquire::Check-Valid-Until "false"',
                "--include=" + ",".join(ROOTFS_PACKAGES),
                ROOTFS_SUITE,
                str(build_dir),
                mirror,
            ],
            log,
        )
        build_dir.rename(self.root)
        log(f"rootfs runtime: ready at {self.root}")

    def command(self, argv: Sequence[str]) -> list[str]:
        if not self.is_built():
            raise RuntimeUnavailable(f"rootfs runtime not built at {self.root}; run `make setup`")
        return ["chroot", str(self.root), *argv]

    def _host_root(self) -> Path:
        return self.root

    def scratch_root(self) -> Path:
        path = self.root / "srv" / "botbridge"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def runtime_path(self, host_path: Path) -> str:
        return "/" + str(Path(host_path).resolve().relative_to(self.root.resolve()))


class DockerRuntime(Runtime):
    """Asterisk and SIPp in one long-lived container on the host network.

    The scratch directory is mounted at the same path inside the container, so host and
    runtime paths are equal. The image is built from devtools/docker/Dockerfile.
    """

    name = "docker"

    def __init__(self, image: str | None = None, scratch: Path | None = None) -> None:
        self.image = image or os.environ.get("BOTBRIDGE_DOCKER_IMAGE", DOCKER_IMAGE_DEFAULT)
        self._scratch = scratch or cache_dir() / "docker-scratch"
        self._container_id: str | None = None
        reason = docker_unavailable_reason()
        if reason:
            raise RuntimeUnavailable(f"docker runtime: {reason}")

    def ensure_image(self) -> None:
        """Build the image from devtools/docker/Dockerfile when the engine lacks it."""
        probe = subprocess.run(
            ["docker", "image", "inspect", self.image], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return
        context = Path(__file__).resolve().parent / "docker"
        _stderr(f"docker runtime: building image {self.image} from {context}")
        _run_logged(["docker", "build", "-t", self.image, str(context)], _stderr)

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer  # optional dependency

        self.ensure_image()
        scratch = str(self.scratch_root())
        container = (
            DockerContainer(self.image)
            .with_volume_mapping(scratch, scratch, "rw")
            .with_kwargs(network_mode="host")
            .with_command("sleep infinity")
        )
        container.start()
        self._container = container
        self._container_id = container.get_wrapped_container().id

    def stop(self) -> None:
        if self._container_id:
            self._container.stop()
            self._container_id = None

    def command(self, argv: Sequence[str]) -> list[str]:
        if self._container_id is None:
            self.start()
        return ["docker", "exec", str(self._container_id), *argv]

    def scratch_root(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def runtime_path(self, host_path: Path) -> str:
        return str(host_path)

    def module_dir(self) -> str:
        out = subprocess.run(
            self.command(
                ["sh", "-c", "ls -d /usr/lib/*/asterisk/modules /usr/lib/asterisk/modules"]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        for line in out.stdout.split():
            return line
        raise RuntimeUnavailable("docker runtime: no Asterisk module directory in the image")


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers, else a sentence saying why not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        out = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker engine did not answer: {exc}"
    if out.returncode != 0:
        detail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers ({detail})"
    return None


def select_runtime(preference: str | None = None, *, build: bool = True) -> Runtime:
    """Choose a provider: an explicit one (BOTBRIDGE_RUNTIME) or the first that works."""
    choice = (preference or os.environ.get("BOTBRIDGE_RUNTIME") or "auto").strip().lower()
    if choice == "system":
        runtime: Runtime = SystemRuntime()
    elif choice == "docker":
        runtime = DockerRuntime()
    elif choice == "rootfs":
        runtime = _rootfs(build)
    elif choice == "auto":
        runtime = _auto(build)
    else:
        raise RuntimeUnavailable(
            f"BOTBRIDGE_RUNTIME={choice!r} is not one of auto, system, rootfs, docker"
        )
    runtime.asterisk_version()
    return runtime


def _auto(build: bool) -> Runtime:
    reasons = []
    try:
        system = SystemRuntime()
        system.asterisk_version()
        return system
    except RuntimeUnavailable as exc:
        reasons.append(str(exc))
    rootfs = RootfsRuntime()
    if rootfs.is_built() or (build and os.geteuid() == 0):
        return _rootfs(build)
    try:
        return DockerRuntime()
    except RuntimeUnavailable as exc:
        reasons.append(str(exc))
    reasons.append("rootfs runtime: not built and cannot be built without root")
    raise RuntimeUnavailable("no Asterisk runtime available: " + "; ".join(reasons))


def _rootfs(build: bool) -> RootfsRuntime:
    runtime = RootfsRuntime()
    if build:
        runtime.ensure()
    elif not runtime.is_built():
        raise RuntimeUnavailable(f"rootfs runtime not built at {runtime.root}; run `make setup`")
    return runtime


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_logged(argv: list[str], log: TextLog) -> None:
    """Run a long step, streaming its output with elapsed time so a person sees progress."""
    start = time.monotonic()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log(f"  [{time.monotonic() - start:5.0f}s] {line.rstrip()}")
        code = proc.wait(timeout=ROOTFS_BUILD_TIMEOUT_SECONDS)
    if code != 0:
        raise RuntimeUnavailable(f"{argv[0]} failed with exit code {code}; see the output above")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.runtime [ensure|describe]``: used by make setup and CI."""
    args = list(argv if argv is not None else sys.argv[1:]) or ["ensure"]
    try:
        runtime = select_runtime(build=args[0] == "ensure")
        print(runtime.describe())
    except RuntimeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
