"""The Debian mirror the host's apt uses, for the rootfs runtime build (devtools/runtime.py).

``BOTBRIDGE_DEBIAN_MIRROR`` wins when set. Otherwise the first ``deb`` source of a Debian
suite in the host's apt sources: ``/etc/apt/sources.list``, then ``sources.list.d/*.list``
(one-line format) and ``*.sources`` (deb822) in name order, as apt reads them. A source is
Debian's when one of its suites is the host's codename (on a Debian host, from
``/etc/os-release``) or a Debian alias such as ``stable`` or ``sid``; security, updates and
third-party sources do not match. The parsing is written here: python-apt (which has a parser)
is not on PyPI, see docs/decisions.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

MIRROR_ENV = "BOTBRIDGE_DEBIAN_MIRROR"
APT_DIR = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
DEBIAN_ALIASES = frozenset(
    {"oldoldstable", "oldstable", "stable", "testing", "unstable", "sid", "experimental"}
)
SCHEMES = ("http://", "https://", "file:")  # what mmdebstrap can fetch from


class NoMirror(RuntimeError):
    """No Debian mirror in the host's apt sources and none given by the environment."""


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]


def one_line_sources(text: str) -> Iterator[Source]:
    """``deb [options] uri suite [components]`` lines; comments and ``deb-src`` skipped."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        # options are ``[key=value ...]`` right after the type, spaces allowed inside
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "deb":
            yield Source(fields[1], (fields[2],))


def deb822_sources(text: str) -> Iterator[Source]:
    """Paragraphs of ``Types``/``URIs``/``Suites``; ``Enabled: no`` and comments skipped."""
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:  # continuation of the previous field
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        for uri in fields.get("uris", "").split():
            yield Source(uri, suites)


def host_sources(apt_dir: Path = APT_DIR) -> Iterator[Source]:
    """Every ``deb`` source of the host's apt configuration, in the order apt reads them."""
    main = apt_dir / "sources.list"
    if main.is_file():
        yield from one_line_sources(main.read_text())
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else ():
        if path.suffix == ".list":
            yield from one_line_sources(path.read_text())
        elif path.suffix == ".sources":
            yield from deb822_sources(path.read_text())


def debian_suites(os_release: str) -> frozenset[str]:
    """The suite names that mark a Debian source: the aliases, and the host's codename when
    the host is Debian (a derivative's codename names its own archive)."""
    values = dict(
        (k, v.strip().strip('"'))
        for k, _, v in (line.partition("=") for line in os_release.splitlines())
    )
    codename = values.get("VERSION_CODENAME", "")
    if values.get("ID") == "debian" and codename:
        return DEBIAN_ALIASES | {codename}
    return DEBIAN_ALIASES


def debian_mirror(
    env: Mapping[str, str] | None = None,
    apt_dir: Path = APT_DIR,
    os_release: Path = OS_RELEASE,
) -> str:
    """The mirror for the rootfs build: $BOTBRIDGE_DEBIAN_MIRROR, else the host's."""
    given = (os.environ if env is None else env).get(MIRROR_ENV, "").strip()
    if given:
        return given
    release = os_release.read_text() if os_release.is_file() else ""
    suites = debian_suites(release)
    for source in host_sources(apt_dir):
        if source.uri.startswith(SCHEMES) and suites.intersection(source.suites):
            return source.uri
    raise NoMirror(
        f"no Debian mirror in the apt sources under {apt_dir} (a `deb` source of suite "
        f"{' or '.join(sorted(suites))}); set {MIRROR_ENV} to the URL of a Debian mirror, "
        "e.g. the one your network provides"
    )
