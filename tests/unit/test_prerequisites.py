"""make setup's tool installer (devtools/prerequisites.py): what it runs, and when it stops."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from devtools import prerequisites
from devtools.prerequisites import TOOLS, MissingTool, Tool, install, install_hint, missing


class Apt:
    """Stands for apt-get: records each command; ``install`` makes the named tools appear."""

    def __init__(self, code: int = 0, provides: bool = True) -> None:
        self.code = code
        self.provides = provides
        self.calls: list[list[str]] = []
        self.installed: set[str] = set()

    def __call__(self, argv: Sequence[str]) -> int:
        self.calls.append(list(argv))
        if argv[1] == "install" and self.provides and self.code == 0:
            self.installed.update(argv[3:])
        return self.code

    def tool(self, name: str, package: str, wanted: bool = True) -> Tool:
        return Tool(
            name,
            f"the {name} tests",
            (package,),
            lambda: f"/usr/bin/{name}" if package in self.installed else None,
            lambda: wanted,
        )


@pytest.fixture(autouse=True)
def apt_get_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "apt-get").write_text("#!/bin/sh\nexit 99\n")  # never run: Apt stands in
    (tmp_path / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_as_root_the_missing_packages_are_installed_with_apt_get() -> None:
    apt = Apt()
    apt.installed.add("present")
    tools = {
        "a": apt.tool("a", "pkg-a"),
        "here": apt.tool("here", "present"),
        "b": apt.tool("b", "pkg-b"),
        "unwanted": apt.tool("unwanted", "pkg-c", wanted=False),
    }
    lines: list[str] = []
    assert install(tools, is_root=True, run=apt, log=lines.append) == ["pkg-a", "pkg-b"]
    assert apt.calls == [["apt-get", "update"], ["apt-get", "install", "-y", "pkg-a", "pkg-b"]]
    assert lines[0] == "prerequisites: installing pkg-a pkg-b for a (the a tests); b (the b tests)"
    assert lines[-1] == "prerequisites: installed pkg-a pkg-b"
    assert missing(tools) == []


def test_nothing_missing_runs_nothing() -> None:
    apt = Apt()
    apt.installed.add("pkg-a")
    lines: list[str] = []
    assert install({"a": apt.tool("a", "pkg-a")}, is_root=True, run=apt, log=lines.append) == []
    assert apt.calls == []
    assert lines == ["prerequisites: every tool is there"]


def test_not_root_it_stops_at_once_with_the_exact_command() -> None:
    apt = Apt()
    tools = {"a": apt.tool("a", "pkg-a"), "b": apt.tool("b", "pkg-b")}
    with pytest.raises(MissingTool) as raised:
        install(tools, is_root=False, run=apt)
    assert apt.calls == []
    assert str(raised.value) == (
        "missing: a (the a tests); b (the b tests). Installing them needs root; run: "
        "sudo apt-get update && sudo apt-get install -y pkg-a pkg-b"
    )


def test_a_failing_apt_get_stops_setup() -> None:
    apt = Apt(code=100)
    with pytest.raises(MissingTool, match=r"^apt-get update failed with exit code 100"):
        install({"a": apt.tool("a", "pkg-a")}, is_root=True, run=apt)
    assert apt.calls == [["apt-get", "update"]]


def test_a_package_that_does_not_bring_the_tool_is_an_error() -> None:
    apt = Apt(provides=False)
    with pytest.raises(MissingTool, match=r"^still missing after installing: a is missing"):
        install({"a": apt.tool("a", "pkg-a")}, is_root=True, run=apt)
    assert len(apt.calls) == 2


def test_without_apt_get_the_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    apt = Apt()
    with pytest.raises(MissingTool, match=r"No apt-get here: .* Debian packages pkg-a$"):
        install({"a": apt.tool("a", "pkg-a")}, is_root=True, run=apt)
    assert apt.calls == []


def test_a_tool_hint_says_make_setup_and_the_apt_command() -> None:
    hint = TOOLS["kamailio TLS module"].hint()
    assert hint.startswith("kamailio TLS module is missing (the edge's TLS listener")
    assert "`make setup` installs it as root" in hint
    assert hint.endswith("or run: " + install_hint(["kamailio-tls-modules"]))
    assert install_hint(["a", "b"], root=True) == "apt-get update && apt-get install -y a b"
    assert install_hint(["a"], root=False) == ("sudo apt-get update && sudo apt-get install -y a")


def test_the_table_names_what_the_tests_need() -> None:
    packages = {name: tool.packages for name, tool in TOOLS.items()}
    assert packages == {
        "python3-venv": ("python3-venv",),
        "kamailio": ("kamailio",),
        "kamailio TLS module": ("kamailio-tls-modules",),
        "PostgreSQL server": ("postgresql",),
        "chromium": ("chromium",),
        "systemd-analyze": ("systemd",),
        "mmdebstrap": ("mmdebstrap",),
    }


def test_postgres_is_found_where_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tool = TOOLS["PostgreSQL server"]
    monkeypatch.delenv(prerequisites.POSTGRES_URL_ENV, raising=False)
    monkeypatch.setenv(prerequisites.POSTGRES_BIN_ENV, str(tmp_path / "bin"))
    assert tool.locate() is None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "initdb").touch()
    assert tool.locate() == str(tmp_path / "bin")
    monkeypatch.setenv(prerequisites.POSTGRES_BIN_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.setenv(prerequisites.POSTGRES_URL_ENV, "postgresql://postgres@db.example/")
    assert tool.locate() == "postgresql://postgres@db.example/"  # a server of its own


def test_check_lists_every_tool_and_fails_on_a_missing_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    apt = Apt()
    monkeypatch.setattr(prerequisites, "TOOLS", {"a": apt.tool("a", "pkg-a")})
    assert prerequisites.main(["check"]) == 1
    out, err = capsys.readouterr()
    assert out == "a: MISSING\n"
    assert "apt-get install -y pkg-a" in err
    apt.installed.add("pkg-a")
    assert prerequisites.main(["check"]) == 0
    assert capsys.readouterr().out == "a: /usr/bin/a\n"
