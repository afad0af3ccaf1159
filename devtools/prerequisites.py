"""The programs the tests and the dev targets need, and how ``make setup`` installs them.

One table (``TOOLS``): each tool, what needs it, how to find it and the Debian packages that
provide it. ``python -m devtools.prerequisites install`` (the first step of ``make setup``)
installs every missing one as root with ``apt-get``, its output shown as it runs; not as root,
it stops at once and prints the exact command to run. ``check`` only reports.

Standard library only: ``make setup`` runs this with the system ``python3`` before the
virtualenv exists (the virtualenv itself needs ``python3-venv`` on Debian).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

APT_GET = "apt-get"
# a test points the store tests at a server of its own (devtools/postgres.py)
POSTGRES_URL_ENV = "BOTBRIDGE_TEST_POSTGRES_URL"
POSTGRES_BIN_ENV = "BOTBRIDGE_TEST_POSTGRES_BIN"
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
KAMAILIO_FALLBACK = "/usr/sbin/kamailio"  # not on a non-root user's PATH on Debian
KAMAILIO_TLS_GLOBS = (
    "/usr/lib/*/kamailio/modules/tls.so",
    "/usr/lib/kamailio/modules/tls.so",
    "/usr/lib64/kamailio/modules/tls.so",
    "/usr/local/lib*/kamailio/modules/tls.so",
)
CHROMIUM_NAMES = ("chromium", "chromium-browser")


class MissingTool(RuntimeError):
    """A tool is missing; the message names it, what needs it and how to install it."""


def _first(paths: Iterable[str | None]) -> str | None:
    return next((p for p in paths if p), None)


def _globbed(patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    return None


def postgres_bin_dirs() -> list[Path]:
    """Directories that may hold initdb/pg_ctl: $BOTBRIDGE_TEST_POSTGRES_BIN, else Debian's,
    newest version first."""
    given = os.environ.get(POSTGRES_BIN_ENV)
    if given:
        return [Path(given)]
    found = glob.glob(POSTGRES_BIN_GLOB)
    return sorted((Path(p) for p in found), key=lambda p: int(p.parent.name), reverse=True)


def _postgres() -> str | None:
    if os.environ.get(POSTGRES_URL_ENV):
        return os.environ[POSTGRES_URL_ENV]
    return _first(str(d) for d in postgres_bin_dirs() if (d / "initdb").exists())


def _kamailio() -> str | None:
    return shutil.which("kamailio") or (
        KAMAILIO_FALLBACK if Path(KAMAILIO_FALLBACK).exists() else None
    )


def _chromium() -> str | None:
    return _first(shutil.which(name) for name in CHROMIUM_NAMES)


def _venv() -> str | None:
    spec = importlib.util.find_spec("ensurepip")
    return spec.origin if spec is not None else None


def _rootfs_may_be_built() -> bool:
    """mmdebstrap builds the rootfs runtime, which only root can build and enter, unless
    another provider is chosen (devtools/runtime.py)."""
    choice = (os.environ.get("BOTBRIDGE_RUNTIME") or "auto").strip().lower()
    return os.geteuid() == 0 and choice in ("auto", "rootfs")


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Tool:
    name: str
    needed_by: str
    packages: tuple[str, ...]
    locate: Callable[[], str | None]  # where it is, or None when missing
    wanted: Callable[[], bool] = _always

    def hint(self) -> str:
        return (
            f"{self.name} is missing ({self.needed_by}); `make setup` installs it as root, "
            f"or run: {install_hint(self.packages)}"
        )

    def require(self) -> str:
        """Where the tool is; MissingTool (with the command that installs it) when missing."""
        found = self.locate()
        if found is None:
            raise MissingTool(self.hint())
        return found


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("python3-venv", "make setup's virtualenv", ("python3-venv",), _venv),
        Tool(
            "kamailio",
            "the cluster edge: make cluster-up, tests/integration/test_cluster.py",
            ("kamailio",),
            _kamailio,
        ),
        Tool(
            "kamailio TLS module",
            "the edge's TLS listener: make cluster-up, tests/integration/test_cluster.py",
            ("kamailio-tls-modules",),
            lambda: _globbed(KAMAILIO_TLS_GLOBS),
        ),
        Tool(
            "PostgreSQL server",
            "the throwaway server of tests/store and make cluster-up, devtools/postgres.py",
            ("postgresql",),
            _postgres,
        ),
        Tool(
            "chromium",
            "the headless report page and email rendering tests",
            ("chromium",),
            _chromium,
        ),
        Tool(
            "systemd-analyze",
            "the systemd unit check, tests/unit/test_systemd_units.py",
            ("systemd",),
            lambda: shutil.which("systemd-analyze"),
        ),
        Tool(
            "mmdebstrap",
            "building the rootfs runtime (Asterisk 22 and SIPp, devtools/runtime.py)",
            ("mmdebstrap",),
            lambda: shutil.which("mmdebstrap"),
            _rootfs_may_be_built,
        ),
    )
}


def install_hint(packages: Sequence[str], *, root: bool | None = None) -> str:
    """The command a person runs to install ``packages``."""
    sudo = "" if (os.geteuid() == 0 if root is None else root) else "sudo "
    return f"{sudo}{APT_GET} update && {sudo}{APT_GET} install -y {shlex.join(packages)}"


def missing(tools: Mapping[str, Tool] | None = None) -> list[Tool]:
    """The wanted tools that are not there, in table order."""
    table = TOOLS if tools is None else tools
    return [t for t in table.values() if t.wanted() and t.locate() is None]


def packages_of(tools: Iterable[Tool]) -> list[str]:
    return list(dict.fromkeys(p for t in tools for p in t.packages))


Run = Callable[[Sequence[str]], int]
Log = Callable[[str], None]


APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def _run(argv: Sequence[str]) -> int:
    # output not captured: apt-get's own progress reaches the terminal as it goes
    return subprocess.run(list(argv), check=False, env={**os.environ, **APT_ENV}).returncode


def install(
    tools: Mapping[str, Tool] | None = None,
    *,
    is_root: bool | None = None,
    run: Run = _run,
    log: Log | None = None,
) -> list[str]:
    """Install the missing tools' packages (root, apt-get); the packages installed.

    MissingTool when a tool is missing and this cannot install it (not root, no apt-get,
    or apt-get failed), naming every missing tool and the command that installs them."""
    say = log or _stderr
    table = TOOLS if tools is None else tools
    absent = missing(table)
    if not absent:
        say("prerequisites: every tool is there")
        return []
    packages = packages_of(absent)
    listing = "; ".join(f"{t.name} ({t.needed_by})" for t in absent)
    root = os.geteuid() == 0 if is_root is None else is_root
    if not root:
        raise MissingTool(
            f"missing: {listing}. Installing them needs root; run: "
            + install_hint(packages, root=False)
        )
    if shutil.which(APT_GET) is None:
        raise MissingTool(
            f"missing: {listing}. No {APT_GET} here: install the equivalent of the Debian "
            f"packages {', '.join(packages)}"
        )
    say(f"prerequisites: installing {' '.join(packages)} for {listing}")
    for argv in ([APT_GET, "update"], [APT_GET, "install", "-y", *packages]):
        say("prerequisites: " + shlex.join(argv))
        code = run(argv)
        if code != 0:
            raise MissingTool(f"{shlex.join(argv)} failed with exit code {code}; see above")
    still = missing(table)
    if still:
        raise MissingTool("still missing after installing: " + "; ".join(t.hint() for t in still))
    say(f"prerequisites: installed {' '.join(packages)}")
    return packages


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.prerequisites [install|check]``: make setup runs ``install``."""
    args = list(argv if argv is not None else sys.argv[1:]) or ["install"]
    try:
        if args[0] == "install":
            install()
        elif args[0] == "check":
            for tool in TOOLS.values():
                state = tool.locate() or ("MISSING" if tool.wanted() else "not needed here")
                print(f"{tool.name}: {state}")
            absent = missing()
            if absent:
                raise MissingTool("; ".join(t.hint() for t in absent))
        else:
            print("usage: python -m devtools.prerequisites [install|check]", file=sys.stderr)
            return 2
    except MissingTool as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
