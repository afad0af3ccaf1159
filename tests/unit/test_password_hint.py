"""Without an ARI password, an installed bridge says what its user can do (no `make setup`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ari_app import cli
from ari_app.asterisk import DEPLOYED_ARI_PASSWORD_FILE
from ari_app.config import load_config
from ari_app.main import run_app

DEPLOYMENT_DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def _expect_hint(message: str, state: Path) -> None:
    assert "BOTBRIDGE_ARI_PASSWORD," in message
    assert f"write the password to {DEPLOYED_ARI_PASSWORD_FILE} (mode 0600" in message
    assert f"BOTBRIDGE_ARI_PASSWORD_FILE={DEPLOYED_ARI_PASSWORD_FILE}" in message
    assert str(state / "ari-password") in message  # where it looked
    assert "make" not in message


@pytest.fixture
def no_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("BOTBRIDGE_ARI_PASSWORD", "BOTBRIDGE_ARI_PASSWORD_FILE", "BOTBRIDGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("BOTBRIDGE_STATE_DIR", str(state))
    return state


def test_render_config_without_a_password_names_the_deployed_file(
    no_password: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    target = tmp_path / "instance"
    code = cli.main(["render-config", str(target), "--module-dir", str(modules)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no ARI password")
    _expect_hint(err, no_password)
    assert not (target / "etc").exists()


def test_the_app_without_a_password_says_the_same(no_password: Path) -> None:
    config = load_config()
    assert config.ari_password == ""
    with pytest.raises(SystemExit) as stopped:
        asyncio.run(run_app(config))
    _expect_hint(str(stopped.value.code), no_password)


def test_the_file_named_is_the_one_the_deployment_guide_writes() -> None:
    guide = DEPLOYMENT_DOC.read_text()
    assert f"install -m 0600 /dev/null {DEPLOYED_ARI_PASSWORD_FILE}" in guide
