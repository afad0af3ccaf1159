"""Rendering the shipped Asterisk configuration templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ari_app.asterisk
from ari_app.asterisk import CONFIG_FILES, RenderError, render, template_text, template_values
from ari_app.config import Config, load_config

PASSWORD = "s3cret-from-config-7f1c"
DIRS = {
    "ETC_DIR": "/srv/botbridge/x/etc",
    "VARLIB_DIR": "/srv/botbridge/x/lib",
    "SPOOL_DIR": "/srv/botbridge/x/spool",
    "RUN_DIR": "/srv/botbridge/x/run",
    "LOG_DIR": "/srv/botbridge/x/log",
    "TLS_DIR": "/srv/botbridge/x/tls",
    "TLS_CERT_FILE": "/srv/botbridge/x/tls/server.crt",
    "TLS_KEY_FILE": "/srv/botbridge/x/tls/server.key",
}
MODULE_DIR = "/usr/lib/x86_64-linux-gnu/asterisk/modules"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(
        env={"BOTBRIDGE_STATE_DIR": str(tmp_path), "BOTBRIDGE_ARI_PASSWORD": PASSWORD}
    )


# the templates as the package ships them (package data beside ari_app/asterisk/__init__.py)
TEMPLATE_DIR = Path(ari_app.asterisk.__file__).parent


@pytest.fixture
def rendered(config: Config) -> dict[str, str]:
    values = template_values(config, DIRS, MODULE_DIR)
    return {name: render(template_text(name), values) for name in CONFIG_FILES}


def test_render_fills_placeholders() -> None:
    assert render("bind = {{HOST}}:{{PORT}}", {"HOST": "127.0.0.1", "PORT": 5060}) == (
        "bind = 127.0.0.1:5060"
    )
    assert render("{{A}}{{A}}", {"A": "x"}) == "xx"
    assert render("no placeholders; ${EXTEN} stays", {}) == "no placeholders; ${EXTEN} stays"


def test_render_refuses_an_unknown_placeholder() -> None:
    with pytest.raises(RenderError, match=re.escape("{{MISSING}}")):
        render("a = {{KNOWN}}\nb = {{MISSING}}\n", {"KNOWN": 1})


def test_every_template_is_rendered() -> None:
    shipped = {p.name for p in TEMPLATE_DIR.glob("*.conf")}
    assert shipped == set(CONFIG_FILES)


def test_every_template_renders_without_leftovers(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        # (``}}`` alone is Asterisk's nested variable, ``${A_${B}}``)
        assert not re.search(r"\{\{[A-Z_]*\}\}", text), f"{name} has an unfilled placeholder"
        assert "{{" not in text, f"{name} has an unfilled placeholder"


def test_rendered_values_come_from_config(config: Config, rendered: dict[str, str]) -> None:
    pjsip = rendered["pjsip.conf"]
    assert f"bind = 127.0.0.1:{config.sip.port}" in pjsip
    assert f"bind = 127.0.0.1:{config.sip.tls_port}" in pjsip
    assert f"contact = {config.profiles['default'].bot_uri}" in pjsip
    assert f"contact = {config.sip.agent_contact}" in pjsip
    assert f"cert_file = {DIRS['TLS_CERT_FILE']}" in pjsip
    variable = config.bridge.availability_variable
    # business_hours, then the verstat headers the dialplan always reads (no carrier_headers)
    cut = config.bridge.max_header_bytes + 1
    assert (
        f"Stasis({config.ari.app},inbound,${{{variable}}},"
        f"hdr.P-Asserted-Identity=${{BASE64_ENCODE(:${{PJSIP_HEADER(read,P-Asserted-Identity):0:{cut}}})}},"
        f"hdr.From=${{BASE64_ENCODE(:${{PJSIP_HEADER(read,From):0:{cut}}})}})"
    ) in rendered["extensions.conf"]
    assert f"astmoddir => {MODULE_DIR}" in rendered["asterisk.conf"]
    rtp = rendered["rtp.conf"]
    assert f"rtpstart = {config.sip.rtp_start}" in rtp
    assert f"rtpend = {config.sip.rtp_end}" in rtp


def test_ari_password_comes_only_from_config(config: Config, rendered: dict[str, str]) -> None:
    ari = rendered["ari.conf"]
    assert f"[{config.ari.username}]" in ari
    assert re.search(rf"^password = {re.escape(PASSWORD)}$", ari, re.MULTILINE)
    # the secret appears in ari.conf and nowhere else
    assert [name for name, text in rendered.items() if PASSWORD in text] == ["ari.conf"]


def test_no_password_literal_in_the_templates() -> None:
    literal = []
    for path in sorted(TEMPLATE_DIR.rglob("*")):
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = re.match(r"^\s*(password|secret)\s*=>?\s*(.*?)\s*$", line, re.IGNORECASE)
            if match and not re.fullmatch(r"\{\{[A-Z_]+\}\}", match.group(2)):
                literal.append(f"{path.name}:{number}: {line.strip()}")
    assert literal == []


def test_media_settings_are_rendered_per_endpoint(tmp_path: Path) -> None:
    config = load_config(
        env={
            "BOTBRIDGE_STATE_DIR": str(tmp_path),
            "BOTBRIDGE_ARI_PASSWORD": PASSWORD,
            "BOTBRIDGE_CONFIG": str(_write(tmp_path / "c.toml", MEDIA_TOML)),
        }
    )
    values = template_values(config, DIRS, MODULE_DIR)
    pjsip = render(template_text("pjsip.conf"), values)
    sections = _sections(pjsip)
    assert sections["carrier"]["allow"] == "ulaw,g722"
    assert sections["carrier"]["dtmf_mode"] == "rfc4733"
    assert sections["voicebot"]["allow"] == "alaw"
    assert sections["voicebot"]["dtmf_mode"] == "auto_info"
    assert sections["agent1"]["allow"] == "g722,ulaw,alaw"
    assert all(sections[name]["disallow"] == "all" for name in ("carrier", "voicebot", "agent1"))
    modules = render(template_text("modules.conf"), values)
    assert "load => codec_g722.so" in modules.splitlines()


MEDIA_TOML = (
    '[sip]\ncarrier_codecs = ["ulaw", "g722"]\n'
    '[profiles.default]\ncodecs = ["alaw"]\ndtmf_mode = "auto_info"\n'
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _sections(text: str) -> dict[str, dict[str, str]]:
    """name -> key -> value of the endpoint sections (type = endpoint) of a pjsip.conf."""
    found: dict[str, dict[str, str]] = {}
    name, current = "", dict[str, str]()
    for line in [*text.splitlines(), "[end]"]:
        line = line.split(";", 1)[0].strip()
        if line.startswith("["):
            if current.get("type") == "endpoint":
                found[name] = current
            name, current = line.strip("[]"), {}
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            current[key] = value
    return found
