"""The wheel is all a host needs: it carries the Asterisk templates, the defaults, the
migrations and the type marker; installed into a fresh virtualenv its `ari-app` runs
`--version`, `check-config` and `render-config` (docs/deployment.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from ari_app.asterisk import CONFIG_FILES
from tests.wheels import build_wheel, checkout_copy, run, venv_with

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # builds a wheel and a venv
REPO = Path(__file__).resolve().parents[2]


def test_render_config_from_the_wheel_alone(tmp_path: Path) -> None:
    wheel = build_wheel(checkout_copy(REPO, tmp_path / "source"), tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ari_app/asterisk/{name}" for name in CONFIG_FILES} <= names
    assert {"ari_app/defaults.toml", "ari_app/store/migrations/script.py.mako"} <= names
    assert "ari_app/py.typed" in names
    # the migrations of the source, not also those an earlier build left in build/
    migrations = "ari_app/store/migrations/versions"
    shipped = {n for n in names if n.startswith(migrations) and n.endswith(".py")}
    assert shipped == {f"{migrations}/{p.name}" for p in (REPO / migrations).glob("*.py")}
    assert not [n for n in names if n.startswith(("devtools/", "tests/"))]

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "chan_pjsip.so").touch()
    target = tmp_path / "instance"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ari_app, ari_app.cli;"
            "print(ari_app.__file__, file=sys.stderr);"
            "sys.exit(ari_app.cli.main(sys.argv[1:]))",
            "render-config",
            str(target),
            "--module-dir",
            str(modules),
        ],
        # the unpacked wheel first on the path, run from elsewhere: not the repository's copy
        env={
            "PYTHONPATH": str(unpacked),
            "BOTBRIDGE_ARI_PASSWORD": "x" * 24,
            "BOTBRIDGE_STATE_DIR": str(tmp_path / "state"),
            "PATH": "/usr/bin:/bin",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert str(unpacked) in result.stderr
    for name in CONFIG_FILES:
        assert (target / "etc" / name).is_file(), name
    assert f"astmoddir => {modules}" in (target / "etc" / "asterisk.conf").read_text()


def test_the_wheel_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """pip installs the wheel into a new virtualenv (its dependencies lent: tests/wheels.py,
    `pip check` passes); its console script works from there."""
    venv = tmp_path / "venv"
    source = checkout_copy(REPO, tmp_path / "source")
    purelib = str(venv_with(build_wheel(source, tmp_path / "dist"), venv))
    python = str(venv / "bin" / "python")
    env = {
        "BOTBRIDGE_STATE_DIR": str(tmp_path / "state"),
        "BOTBRIDGE_ARI_PASSWORD": "x" * 24,
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
    }
    where = run([python, "-c", "import ari_app; print(ari_app.__file__)"], env=env, cwd=tmp_path)
    assert where.stdout.startswith(purelib), where.stdout + where.stderr  # not this checkout

    ari_app = str(venv / "bin" / "ari-app")
    done = run([ari_app, "--version"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ari-app {version('botbridge')}"

    done = run([ari_app, "check-config", "--json"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout)
    assert values["ari_password"] == "********"
    assert values["sip"]["port"] == 5060  # the defaults shipped in the wheel

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "chan_pjsip.so").touch()
    target = tmp_path / "instance"
    done = run(
        [ari_app, "render-config", str(target), "--module-dir", str(modules)], env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    for name in CONFIG_FILES:
        assert (target / "etc" / name).is_file(), name
    assert f"astmoddir => {modules}" in (target / "etc" / "asterisk.conf").read_text()
