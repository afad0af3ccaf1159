"""The production units (contrib/systemd) as systemd reads them: `systemd-analyze verify`.

The units name the installed paths (/opt/botbridge/bin/ari-app, /usr/sbin/asterisk); for the
check they are pointed at executables that exist here (the venv's ari-app, and Asterisk or a
stand-in binary), since verify also checks that every command can be executed. Any line
systemd prints (an unknown key, a bad value, a missing dependency) fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.tools import require_tool

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def verify(directory: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_tool("systemd-analyze")
    units = sorted(str(p) for p in directory.glob("*.service"))
    return subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )


def installable_copy(tmp_path: Path, extra: str = "") -> Path:
    ari_app = Path(sys.executable).with_name("ari-app")
    asterisk = shutil.which("asterisk") or shutil.which("true")
    assert ari_app.exists() and asterisk
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace("/opt/botbridge/bin/ari-app", str(ari_app))
        text = text.replace("/usr/sbin/asterisk", asterisk)
        (tmp_path / unit.name).write_text(text + extra)
    return tmp_path


def test_the_units_are_there() -> None:
    assert {p.name for p in UNITS.glob("*.service")} == {
        "botbridge-asterisk.service",
        "botbridge-app@.service",
    }
    app = (UNITS / "botbridge-app@.service").read_text()
    for line in (
        "Requires=botbridge-asterisk.service",
        "After=botbridge-asterisk.service",
        "Restart=on-failure",
        "StateDirectory=botbridge",
        "LoadCredential=ari-password:",
        "User=botbridge",
        "ExecStart=/opt/botbridge/bin/ari-app run --take-over",
    ):
        assert line in app


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    result = verify(installable_copy(tmp_path))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_the_check_sees_a_bad_unit(tmp_path: Path) -> None:
    result = verify(installable_copy(tmp_path, extra="[Service]\nRestart=sometimes\n"))
    assert "restart specifier" in result.stdout + result.stderr
