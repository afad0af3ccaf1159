"""A checkout of its own for the tests that run the operator's make targets as typed in a
shell: a scratch directory holding this repository's Makefile, package, dev tools and
virtualenv (symbolic links), with the environment of a shell that set nothing that would
place the stack elsewhere. Its run directory (``./var/run``) is its own, so what its
`make up` or `make cluster-up` starts never meets a developer's, nor another test's."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
# what `make up` needs of a checkout: the Makefile, the package (for the virtualenv's stamp
# and the dev tools) and the virtualenv made by `make setup`
CHECKOUT_ENTRIES = ("Makefile", "pyproject.toml", ".venv", "ari_app", "devtools")
# variables that would place the stack elsewhere than a plain `make up` does, and make's own
# (a pytest run under `make test` passes its jobserver on)
UNSET = (
    "BOTBRIDGE_STATE_DIR",
    "BOTBRIDGE_RUN_DIR",
    "BOTBRIDGE_ARI_PASSWORD",
    "BOTBRIDGE_CONFIG",
    "BOTBRIDGE_DATABASE_URL",
    "BOTBRIDGE_STORE_PATH",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
)
UNSET_PREFIX = "BOTBRIDGE_CLUSTER_"  # the addresses of `make cluster-up`
# `make up` boots Asterisk (30 s at most) and waits for the app; `make cluster-up` starts
# PostgreSQL, two nodes and the edge
MAKE_TIMEOUT_SECONDS = 180


@dataclass
class Checkout:
    path: Path
    env: dict[str, str]
    info_name: str  # what the targets write in ./var/run: stack.json, cluster.json

    @property
    def info_path(self) -> Path:
        return self.path / "var" / "run" / self.info_name

    def make(
        self, target: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", target],
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=MAKE_TIMEOUT_SECONDS,
            check=False,
        )

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.info_path.read_text())
        return info


def make_checkout(path: Path, info_name: str) -> Checkout:
    path.mkdir()
    for name in CHECKOUT_ENTRIES:
        (path / name).symlink_to(REPOSITORY / name)
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith(UNSET_PREFIX)}
    return Checkout(path, env, info_name)
