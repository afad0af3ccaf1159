"""The rootfs runtime's Debian mirror, read from the host's apt sources (devtools/apt_sources)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.apt_sources import MIRROR_ENV, NoMirror, debian_mirror

DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
UBUNTU = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n"
# this kind of host: deb822 with comments inside the paragraph, security second
DEB822_HOST = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""
NODESOURCE = """\
Types: deb
URIs: https://deb.vendor.example/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
"""

CASES = [
    pytest.param(
        {"sources.list": "deb http://one.example/debian bookworm main\n"},
        "http://one.example/debian",
        id="one-line",
    ),
    pytest.param(
        {
            "sources.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb-src http://src.example/debian bookworm main\n"
                "deb http://security.example/debian-security bookworm-security main\n"
                "deb http://two.example/debian bookworm main  # the main archive\n"
            )
        },
        "http://two.example/debian",
        id="one-line-comments-deb-src-and-security-skipped",
    ),
    pytest.param(
        {
            "sources.list.d/corp.list": (
                "deb [arch=amd64 signed-by=/usr/share/keyrings/corp.gpg] "
                "https://apt.corp.example/debian bookworm main contrib\n"
            )
        },
        "https://apt.corp.example/debian",
        id="one-line-options",
    ),
    pytest.param(
        {"sources.list.d/debian.sources": DEB822_HOST},
        "http://mirror.example/debian",
        id="deb822-with-comments",
    ),
    pytest.param(
        {
            "sources.list.d/a-node.sources": NODESOURCE,
            "sources.list.d/b-vendor.list": "deb https://vendor.example/apt cloud-bookworm main\n",
            "sources.list.d/debian.sources": DEB822_HOST,
        },
        "http://mirror.example/debian",
        id="third-party-sources-first-are-not-debian",
    ),
    pytest.param(
        {
            "sources.list.d/debian.sources": (
                "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
                "Types: deb-src deb\nURIs: http://on.example/debian\n"
                "  http://second.example/debian\nSuites: bookworm\n"
            )
        },
        "http://on.example/debian",
        id="deb822-disabled-multi-type-continuation",
    ),
    pytest.param(
        {
            "sources.list": "deb http://first.example/debian sid main\n",
            "sources.list.d/debian.sources": DEB822_HOST,
        },
        "http://first.example/debian",
        id="sources-list-before-the-directory",
    ),
    pytest.param(
        {
            "sources.list": (
                "deb cdrom:[Debian 12]/ bookworm main\ndeb file:/srv/debian stable main\n"
            )
        },
        "file:/srv/debian",
        id="alias-suite-and-only-fetchable-schemes",
    ),
]


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def _os_release(tmp_path: Path, text: str = DEBIAN_12) -> Path:
    path = tmp_path / "os-release"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_the_first_debian_deb_source_is_the_mirror(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    mirror = debian_mirror({}, _apt(tmp_path, files), _os_release(tmp_path))
    assert mirror == expected


def test_the_environment_overrides_the_host(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"sources.list.d/debian.sources": DEB822_HOST})
    given = "http://override.example/debian"
    assert debian_mirror({MIRROR_ENV: given}, apt, _os_release(tmp_path)) == given


@pytest.mark.parametrize(
    ("files", "os_release"),
    [
        pytest.param({}, DEBIAN_12, id="no-sources"),
        pytest.param({"sources.list.d/node.sources": NODESOURCE}, DEBIAN_12, id="third-party"),
        pytest.param(
            {"sources.list": "deb http://archive.example/ubuntu noble main\n"},
            UBUNTU,
            id="a-derivative-codename-is-not-debian",
        ),
        pytest.param(
            {"sources.list.d/x.list.disabled": "deb http://x.example/debian bookworm main\n"},
            DEBIAN_12,
            id="files-apt-ignores",
        ),
    ],
)
def test_no_debian_source_names_the_variable(
    tmp_path: Path, files: dict[str, str], os_release: str
) -> None:
    apt = _apt(tmp_path, files)
    with pytest.raises(NoMirror) as raised:
        debian_mirror({}, apt, _os_release(tmp_path, os_release))
    assert f"set {MIRROR_ENV} to the URL of a Debian mirror" in str(raised.value)
    assert str(apt) in str(raised.value)
