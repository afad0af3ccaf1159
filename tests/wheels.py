"""Wheels of this package and virtualenvs holding them, as docs/deployment.md installs them.

Tests reach only loopback, so a virtualenv's dependencies are not downloaded: a .pth file
lends it this environment's site-packages, after its own (a path entry, whose .pth files,
this checkout's editable install among them, are not run). `pip check` then proves every
requirement the wheel declares, with its version bound, is met.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

STEP_TIMEOUT_SECONDS = 300  # one build, install or check step
LENT_PTH = "lent-dependencies.pth"


def checkout_copy(checkout: Path, target: Path) -> Path:
    """The files of the git checkout at ``checkout`` that a commit would hold (tracked, and
    untracked ones git does not ignore) copied into ``target``. pip builds a local project
    in place, and setuptools puts into the wheel whatever an earlier build left in its
    ignored ``build/`` directory (a module since removed included): a wheel is built from
    such a copy, as from a fresh clone."""
    listed = run(["git", "-C", str(checkout), "ls-files", "-z", "--exclude-standard", "-co"])
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        if (checkout / name).is_file():  # not a file deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / name, target / name)
    return target


def build_wheel(source: Path, directory: Path) -> Path:
    """`pip wheel --no-deps` of the project at ``source`` into ``directory``; the wheel."""
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    subprocess.run(
        [*pip, "-w", str(directory), str(source)],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT_SECONDS,
    )
    (wheel,) = directory.glob("botbridge-*.whl")
    return wheel


def run(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One step: its output captured, its exit code left to the caller."""
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
        check=False,
    )


def venv_with(wheel: Path, venv: Path) -> Path:
    """A new virtualenv at ``venv`` with ``wheel`` installed by pip (dependencies lent, see
    the module's docstring); its site-packages directory. Fails the test on any step."""
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=STEP_TIMEOUT_SECONDS
    )
    python = str(venv / "bin" / "python")
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    assert purelib.returncode == 0, purelib.stderr
    packages = Path(purelib.stdout.strip())
    lent = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (packages / LENT_PTH).write_text("\n".join(dict.fromkeys(lent)) + "\n")
    install = run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    assert install.returncode == 0, install.stderr
    check = run([python, "-m", "pip", "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    return packages
