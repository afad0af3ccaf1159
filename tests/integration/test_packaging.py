"""The wheel is all a host needs: it carries the Asterisk templates, the defaults and the
migrations, and `ari-app render-config` works from it alone (docs/deployment.md)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ari_app.asterisk import CONFIG_FILES

REPO = Path(__file__).resolve().parents[2]


def test_render_config_from_the_wheel_alone(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("botbridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ari_app/asterisk/{name}" for name in CONFIG_FILES} <= names
    assert {"ari_app/defaults.toml", "ari_app/store/migrations/script.py.mako"} <= names
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
