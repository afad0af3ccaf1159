"""Runtime providers: version parsing and the 22.8 floor, provider choice, Docker, rootfs reuse."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devtools import prerequisites
from devtools import runtime as runtime_module
from devtools.apt_sources import MIRROR_ENV, NoMirror
from devtools.runtime import (
    MIN_ASTERISK_VERSION,
    DockerRuntime,
    RootfsRuntime,
    Runtime,
    RuntimeUnavailable,
    check_version,
    docker_unavailable_reason,
    parse_asterisk_version,
    select_runtime,
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Asterisk 22.10.1+dfsg+~cs6.17.60671434-1\n", (22, 10, 1)),
        ("Asterisk 22.8.0\n", (22, 8, 0)),
        ("Asterisk 23.0.0-rc1\n", (23, 0, 0)),
        ("Asterisk 22.7.0", (22, 7, 0)),
        ("Asterisk certified/20.7-cert1\n", (20, 7, 0)),
        ("Asterisk certified-22.8-cert2\n", (22, 8, 0)),
        # chroot and docker exec may put noise before the version line
        ("warning: setlocale: LC_ALL: cannot change locale\nAsterisk 22.10.1\n", (22, 10, 1)),
    ],
)
def test_parse_asterisk_version(output: str, expected: tuple[int, int, int]) -> None:
    assert parse_asterisk_version(output) == expected


@pytest.mark.parametrize(
    "output",
    [
        "",
        "chroot: failed to run command 'asterisk': No such file or directory\n",
        "bash: asterisk: command not found\n",
        "Asterisk GIT-master-4a1b2c3\n",
        "SIPp v3.7.3-TLS-SCTP-PCAP-RTPSTREAM.\n",
    ],
)
def test_parse_asterisk_version_rejects_other_output(output: str) -> None:
    with pytest.raises(RuntimeUnavailable, match="cannot read an Asterisk version"):
        parse_asterisk_version(output)


@pytest.mark.parametrize("version", [(22, 7, 0), (22, 7, 9), (21, 9, 3), (20, 7, 0), (18, 0, 0)])
def test_check_version_refuses_older_than_22_8(version: tuple[int, int, int]) -> None:
    with pytest.raises(RuntimeUnavailable) as caught:
        check_version(version, "system")
    message = str(caught.value)
    assert "22.8" in message
    assert ".".join(map(str, version)) in message
    assert "system runtime" in message


@pytest.mark.parametrize("version", [(22, 8, 0), (22, 8, 1), (22, 10, 1), (23, 0, 0), (24, 1, 2)])
def test_check_version_accepts_22_8_and_later(version: tuple[int, int, int]) -> None:
    check_version(version, "rootfs")  # no exception


def test_min_version_is_22_8() -> None:
    assert MIN_ASTERISK_VERSION == (22, 8)


def test_select_runtime_rejects_an_unknown_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTBRIDGE_RUNTIME", "bogus")
    with pytest.raises(RuntimeUnavailable) as caught:
        select_runtime(build=False)
    message = str(caught.value)
    assert "'bogus'" in message
    for choice in ("auto", "system", "rootfs", "docker"):
        assert choice in message


def test_select_runtime_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOTBRIDGE_RUNTIME", "system")
    with pytest.raises(RuntimeUnavailable, match="'nope'"):
        select_runtime("nope", build=False)


def _fake_docker(tmp_path: Path, script: str) -> str:
    """A directory holding only a ``docker`` executable that runs ``script``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\n" + script + "\n")
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(bin_dir)


def test_docker_unavailable_without_a_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert docker_unavailable_reason() == "no docker client on PATH"


def test_docker_unavailable_when_the_engine_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "PATH",
        _fake_docker(
            tmp_path,
            'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2\n'
            "exit 1",
        ),
    )
    reason = docker_unavailable_reason()
    assert reason is not None
    assert reason.startswith("no Docker engine answers")
    assert "Cannot connect to the Docker daemon" in reason
    with pytest.raises(RuntimeUnavailable, match="docker runtime: no Docker engine answers"):
        DockerRuntime()


def test_docker_available_when_the_engine_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", _fake_docker(tmp_path, "echo 27.3.1"))
    assert docker_unavailable_reason() is None


def test_docker_unavailable_reason_on_this_machine_is_a_sentence_or_none() -> None:
    reason = docker_unavailable_reason()
    assert reason is None or (isinstance(reason, str) and len(reason.split()) >= 3)


def test_docker_provider() -> None:
    """Asterisk >= 22.8 runs in the Docker provider, where a Docker engine answers."""
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    runtime = DockerRuntime()
    try:
        version = runtime.asterisk_version()
        assert version[:2] >= MIN_ASTERISK_VERSION
        assert runtime.command(["asterisk", "-V"])[:2] == ["docker", "exec"]
    finally:
        runtime.stop()


def test_rootfs_runtime_is_reused(runtime: Runtime) -> None:
    """Once built, ensure() keeps the cached root filesystem untouched and says so."""
    if not isinstance(runtime, RootfsRuntime):
        pytest.skip(f"the {runtime.name} runtime is in use; no root filesystem is cached here")
    rootfs = RootfsRuntime()
    assert rootfs.is_built(), f"no built root filesystem at {rootfs.root}"
    before = rootfs.root.stat()
    lines: list[str] = []
    rootfs.ensure(log=lines.append)
    after = rootfs.root.stat()
    assert lines == [f"rootfs runtime: reusing {rootfs.root}"]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not rootfs.root.with_name(rootfs.root.name + ".partial").exists()
    assert rootfs.command(["asterisk", "-V"]) == ["chroot", str(rootfs.root), "asterisk", "-V"]
    assert rootfs.asterisk_version()[:2] >= MIN_ASTERISK_VERSION


@pytest.fixture
def building(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A root process about to build a root filesystem; the commands it would run."""
    commands: list[list[str]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(prerequisites, "install", lambda *a, **k: [])  # mmdebstrap is there
    monkeypatch.setattr(runtime_module, "_run_logged", lambda argv, log: commands.append(argv))
    return commands


def test_the_rootfs_is_built_from_the_given_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, building: list[list[str]]
) -> None:
    monkeypatch.setenv(MIRROR_ENV, "http://mirror.example/debian")
    root = tmp_path / "rootfs-sid"
    with pytest.raises(FileNotFoundError):  # the stand-in build makes nothing to rename
        RootfsRuntime(root).ensure(log=lambda line: None)
    (mmdebstrap,) = building
    assert mmdebstrap[0] == "mmdebstrap"
    assert mmdebstrap[-3:] == ["sid", str(root) + ".partial", "http://mirror.example/debian"]


def test_without_a_mirror_the_build_stops_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, building: list[list[str]]
) -> None:
    def no_mirror() -> str:
        raise NoMirror(f"no Debian mirror in the apt sources; set {MIRROR_ENV}")

    monkeypatch.setattr(runtime_module, "debian_mirror", no_mirror)
    root = tmp_path / "rootfs-sid"
    with pytest.raises(RuntimeUnavailable, match=rf"^rootfs runtime: no Debian .* {MIRROR_ENV}$"):
        RootfsRuntime(root).ensure(log=lambda line: None)
    assert building == []
    assert not root.with_name("rootfs-sid.partial").exists()
