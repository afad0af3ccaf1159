"""`make test` and `.ci/run` reach the tool installer first (Makefile, devtools/prerequisites)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _dry_run(target: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.fail("no make: the project's entry points are make targets (apt-get install make)")
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "-B", target, "PYTHON=python3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def test_make_test_installs_the_tools_before_anything_else() -> None:
    lines = _dry_run("test")
    assert lines[0] == "python3 -m devtools.prerequisites install"  # system python3, no venv
    first = {
        what: next(i for i, line in enumerate(lines) if what in line)
        for what in ("-m venv", "devtools.runtime ensure", "ruff check", "-m pytest")
    }
    assert list(first) == sorted(first, key=first.__getitem__)
    assert lines.count("python3 -m devtools.prerequisites install") == 1


def test_ci_runs_make_test_alone() -> None:
    script = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line.strip() and not line.startswith("#")]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]
