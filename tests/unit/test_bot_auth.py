"""Digest authentication towards a bot: the settings, the dial string and pjsip.conf."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ari_app.asterisk import bot_auth_sections
from ari_app.config import Config, ConfigError, load_config

URI = "sip:bot@vendor.example:5060"
OTHER = "sip:plain@vendor.example:5060"


def config(tmp_path: Path, **bot: Any) -> Config:
    return load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STATE_DIR": str(tmp_path)},
        overrides={"profiles": {"default": {"bots": [{"uri": URI, **bot}, {"uri": OTHER}]}}},
    )


def test_a_bot_with_credentials_is_dialled_through_its_own_endpoint(tmp_path: Path) -> None:
    (tmp_path / "bot-password").write_text("p;ss\n")
    cfg = config(tmp_path, auth_username="acme", auth_password_file="bot-password")
    profile = cfg.profiles["default"]
    name = profile.bots[0].auth_endpoint
    assert name.startswith("botbridge-auth-")
    assert profile.dial_string_for(URI) == f"PJSIP/{name}/{URI}"
    assert profile.dial_string_for(OTHER) == f"PJSIP/voicebot/{OTHER}"
    rendered = bot_auth_sections(cfg)
    assert rendered == (
        f"[{name}]\ntype = auth\nauth_type = userpass\nusername = acme\n"
        f"password = p\\;ss\n\n[{name}](voicebot)\noutbound_auth = {name}\n"
    )


def test_a_realm_is_rendered_when_given(tmp_path: Path) -> None:
    (tmp_path / "bot-password").write_text("secret\n")
    cfg = config(
        tmp_path, auth_username="acme", auth_password_file="bot-password", auth_realm="bot.example"
    )
    assert "realm = bot.example\n" in bot_auth_sections(cfg)


def test_no_credentials_no_section(tmp_path: Path) -> None:
    assert bot_auth_sections(config(tmp_path)).startswith(";")


@pytest.mark.parametrize(
    "bot",
    [
        {"auth_username": "acme"},
        {"auth_password_file": "bot-password"},
        {"auth_username": "ac;me", "auth_password_file": "bot-password"},
        {"auth_username": "acme", "auth_password_file": "f", "auth_realm": "a\nb"},
    ],
)
def test_incomplete_or_unsafe_credentials_are_refused_at_load(
    tmp_path: Path, bot: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="auth_"):
        config(tmp_path, **bot)


@pytest.mark.parametrize("content", [None, "", "line\x01break"])
def test_a_missing_empty_or_unsafe_password_file_is_refused(
    tmp_path: Path, content: str | None
) -> None:
    if content is not None:
        (tmp_path / "bot-password").write_text(content)
    cfg = config(tmp_path, auth_username="acme", auth_password_file="bot-password")
    with pytest.raises(ConfigError, match="auth_password_file"):
        bot_auth_sections(cfg)
    assert not (tmp_path / "bot-password").exists() or content is not None  # never made up
