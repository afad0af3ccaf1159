"""Configuration: defaults, environment overrides, validation errors, the ARI secret, patterns."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import msgspec
import pytest

import ari_app
from ari_app.config import (
    AgentSettings,
    AriSettings,
    BillingSettings,
    BridgeSettings,
    ConfigError,
    QueueSettings,
    SipSettings,
    compile_pattern,
    ensure_password_file,
    load_config,
    match_pattern,
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BOTBRIDGE_STATE_DIR": str(tmp_path / "state"), **extra}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "botbridge.toml"
    path.write_text(text)
    return path


def test_defaults_load_and_validate(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    assert config.ari.url == "http://127.0.0.1:8088/ari"
    assert config.ari.app == "botbridge"
    assert config.sip.port == 5060
    assert config.sip.tls_port == 5061
    assert config.sip.rtp_start < config.sip.rtp_end
    assert config.bridge.max_context_bytes == 256
    assert config.routing == {"agents-queue": "agents-queue", "billing": "billing-queue"}
    default = config.profiles["default"]
    assert default.dial_string == "PJSIP/voicebot/sip:voicebot@127.0.0.1:5080"
    assert default.fallback_queue == "agents-queue"
    assert [(r.pattern, r.profile) for r in config.routes] == [("_X.", "default")]
    # relative paths live under the state directory
    assert config.state_dir == (tmp_path / "state").resolve()
    assert config.store.path == str(config.state_dir / "interactions.sqlite3")
    # no secret anywhere yet: not in the defaults, not on disk
    assert config.ari_password == ""


def test_env_overrides_coerce_ints(tmp_path: Path) -> None:
    config = load_config(
        env=_env(
            tmp_path,
            BOTBRIDGE_SIP_PORT="5070",
            BOTBRIDGE_SIP_TLS_PORT="5071",
            BOTBRIDGE_RTP_START="20000",
            BOTBRIDGE_RTP_END="20199",
            BOTBRIDGE_MAX_CONTEXT_BYTES="128",
            BOTBRIDGE_BOT_ANSWER_TIMEOUT="4",
            BOTBRIDGE_ARI_URL="http://127.0.0.1:18088/ari",
            BOTBRIDGE_BOT_URI="sip:voicebot@127.0.0.1:15080",
            BOTBRIDGE_ARI_PASSWORD="from-env",
        )
    )
    assert config.sip.port == 5070 and isinstance(config.sip.port, int)
    assert config.sip.tls_port == 5071
    assert (config.sip.rtp_start, config.sip.rtp_end) == (20000, 20199)
    assert config.bridge.max_context_bytes == 128
    assert config.profiles["default"].answer_timeout_seconds == 4
    assert config.ari.url == "http://127.0.0.1:18088/ari"
    assert config.profiles["default"].bot_uri == "sip:voicebot@127.0.0.1:15080"
    assert config.ari_password == "from-env"


def test_file_then_env_precedence(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[sip]\nport = 5080\ntls_port = 5081\n")
    config = load_config(path, env=_env(tmp_path, BOTBRIDGE_SIP_PORT="5090"))
    assert config.sip.port == 5090  # env beats the file
    assert config.sip.tls_port == 5081  # the file beats the defaults
    assert str(config.sip.host) == "127.0.0.1"  # untouched keys keep their default


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"BOTBRIDGE_SIP_PORT": "notaport"}, "sip.port"),
        ({"BOTBRIDGE_SIP_PORT": "70000"}, "sip.port"),
        ({"BOTBRIDGE_RTP_START": "10"}, "sip.rtp_start"),
        ({"BOTBRIDGE_BOT_ANSWER_TIMEOUT": "soon"}, "answer_timeout_seconds"),
        ({"BOTBRIDGE_MAX_CONTEXT_BYTES": "4096"}, "bridge.max_context_bytes"),
        ({"BOTBRIDGE_SIP_HOST": "not-an-ip"}, "sip.host"),
        ({"BOTBRIDGE_ARI_URL": "ftp://127.0.0.1/ari"}, "ari.url"),
        ({"BOTBRIDGE_ARI_APP": "bot bridge"}, "ari.app"),
        ({"BOTBRIDGE_AGENT_CONTACT": "agent1@127.0.0.1"}, "sip.agent_contact"),
        ({"BOTBRIDGE_RTP_START": "20000", "BOTBRIDGE_RTP_END": "19000"}, "rtp_end"),
    ],
)
def test_bad_env_value_names_the_key(tmp_path: Path, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=_env(tmp_path, **env))
    assert key in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "key", "detail"),
    [
        ('[[routes]]\npattern = "_1X."\nprofile = "nosuch"\n', "routes", "'nosuch'"),
        ('[routing]\nbilling = "billing,queue"\n', "routing.billing", "A-Za-z0-9_-"),
        ('[routing]\nevil = "${SHELL}"\n', "routing.evil", "A-Za-z0-9_-"),
        ('[routing]\nevil = "q)|Hangup("\n', "routing.evil", "A-Za-z0-9_-"),
        ('[profiles.default]\nfallback_queue = "a,b"\n', "fallback_queue", "A-Za-z0-9_-"),
        (
            '[profiles.default]\nextra_headers = { "X-Tenant" = "a\\r\\nVia: x" }\n',
            "extra_headers",
            "unsafe characters",
        ),
        ('[[routes]]\npattern = "5551;x"\nprofile = "default"\n', "routes.0.pattern", "_X."),
        (
            "[profiles.other]\nbot_endpoint = 'x'\n",
            "profiles.other.answer_timeout_seconds",
            "Missing data",
        ),
        ('[profiles.default]\ncodecs = ["opus"]\n', "profiles.default.codecs.0", "one of"),
        ("[profiles.default]\ncodecs = []\n", "profiles.default.codecs", "length >= 1"),
        ('[profiles.default]\ncodecs = ["ulaw", "ulaw"]\n', "codecs", "each codec once"),
        ('[profiles.default]\ndtmf_mode = "inband2"\n', "profiles.default.dtmf_mode", "one of"),
        ('[sip]\ncarrier_codecs = ["gsm"]\n', "sip.carrier_codecs.0", "one of"),
        (
            '[profiles.sales]\nbot_endpoint = "voicebot"\nanswer_timeout_seconds = 5\n'
            'fallback_queue = "q"\ndefault_queue = "q"\navailability_queue = "q"\n'
            'codecs = ["ulaw"]\n',
            "profiles",
            "share bot_endpoint 'voicebot' but differ in codecs or dtmf_mode",
        ),
        ('[webhooks]\nurls = ["ftp://x"]\n', "webhooks.urls.0", "Not a valid URL"),
        ('[webhooks]\noutcomes = ["won"]\n', "webhooks.outcomes.0", "one of"),
        (
            "[webhooks]\nbackoff_initial_seconds = 10\nbackoff_max_seconds = 5\n",
            "webhooks.backoff_max_seconds",
            "at least backoff_initial_seconds",
        ),
    ],
)
def test_bad_file_value_names_the_key(tmp_path: Path, toml: str, key: str, detail: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_toml(tmp_path, toml), env=_env(tmp_path))
    message = str(caught.value)
    assert key in message
    assert detail in message


def test_unreadable_config_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(missing, env=_env(tmp_path))
    broken = _toml(tmp_path, "[sip\nport = 1\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(broken, env=_env(tmp_path))


def test_routing_table_from_a_file_replaces_the_default_one(tmp_path: Path) -> None:
    config = load_config(
        _toml(tmp_path, '[routing]\nsales = "sales-queue"\n[queues.sales-queue]\n'),
        env=_env(tmp_path),
    )
    assert config.routing == {"sales": "sales-queue"}


def test_ensure_password_file_creates_a_private_file_once(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    assert config.ari_password == ""
    path = ensure_password_file(config)
    assert path == config.state_dir / "ari-password"
    first = path.stat()
    assert stat.S_IMODE(first.st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 24
    # the next load reads it
    assert load_config(env=_env(tmp_path)).ari_password == secret
    # a second call leaves it alone
    assert ensure_password_file(config) == path
    second = path.stat()
    assert path.read_text().strip() == secret
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_ensure_password_file_never_overwrites_an_operator_secret(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    path = config.state_dir / "ari-password"
    path.parent.mkdir(parents=True)
    path.write_text("operator-chosen\n")
    assert ensure_password_file(config) == path
    assert path.read_text() == "operator-chosen\n"
    assert load_config(env=_env(tmp_path)).ari_password == "operator-chosen"


def test_password_env_beats_the_file(tmp_path: Path) -> None:
    ensure_password_file(load_config(env=_env(tmp_path)))
    config = load_config(env=_env(tmp_path, BOTBRIDGE_ARI_PASSWORD="env-secret"))
    assert config.ari_password == "env-secret"
    assert "env-secret" not in repr(config)


def test_two_secrets_differ(tmp_path: Path) -> None:
    a = ensure_password_file(load_config(env=_env(tmp_path / "a"))).read_text()
    b = ensure_password_file(load_config(env=_env(tmp_path / "b"))).read_text()
    assert a != b


@pytest.mark.parametrize(
    ("pattern", "number", "matches"),
    [
        # _X. : a digit, then one or more of anything
        ("_X.", "5551000", True),
        ("_X.", "55", True),
        ("_X.", "5", False),
        ("_X.", "", False),
        ("_X.", "a555", False),
        # _NXX : 2-9 then two digits, exactly three characters
        ("_NXX", "555", True),
        ("_NXX", "200", True),
        ("_NXX", "155", False),
        ("_NXX", "055", False),
        ("_NXX", "5555", False),
        ("_NXX", "55", False),
        # Z is 1-9
        ("_ZX", "10", True),
        ("_ZX", "01", False),
        # exact numbers compare as strings
        ("5551000", "5551000", True),
        ("5551000", "5551001", False),
        ("5551000", "55510000", False),
        ("+15551000", "+15551000", True),
        # character classes
        ("_[1-5]XX", "199", True),
        ("_[1-5]XX", "599", True),
        ("_[1-5]XX", "699", False),
        ("_[1-5]XX", "099", False),
        ("_[137]X", "71", True),
        ("_[137]X", "21", False),
        ("_[15-7]", "6", True),
        ("_[15-7]", "4", False),
        # ! : zero or more
        ("_555!", "555", True),
        ("_555!", "5551234", True),
        ("_555!", "556", False),
        # literal characters after the underscore
        ("_+1NXX.", "+12125551234", True),
        ("_+1NXX.", "12125551234", False),
        ("_800X.", "8001234", True),
        ("_800X.", "9001234", False),
    ],
)
def test_match_pattern(pattern: str, number: str, matches: bool) -> None:
    assert match_pattern(pattern, number) is matches


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ("_[1-5", "without a closing ']'"),
        ("_X[", "without a closing ']'"),
        ("_[]X", "empty character class"),
        ("_[5-1]X", "bad character range"),
    ],
)
def test_a_malformed_route_pattern_is_refused_at_load(
    tmp_path: Path, pattern: str, detail: str
) -> None:
    toml = (
        f'[[routes]]\npattern = "_X."\nprofile = "default"\n\n[[routes]]\npattern = "{pattern}"\n'
    )
    path = _toml(tmp_path, toml + 'profile = "default"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=_env(tmp_path))
    message = str(caught.value)
    assert "routes.1.pattern" in message and repr(pattern) in message and detail in message
    with pytest.raises(ValueError, match=detail.replace("[", r"\[").replace("]", r"\]")):
        compile_pattern(pattern)


def test_routes_are_compiled_at_load(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[profiles.sales]\nbot_endpoint = "salesbot"\nanswer_timeout_seconds = 5\n'
        'fallback_queue = "q"\ndefault_queue = "q"\navailability_queue = "q"\n\n'
        '[[routes]]\npattern = "_8[0-4]X."\nprofile = "sales"\n\n'
        '[[routes]]\npattern = "5551000"\nprofile = "default"\n\n[queues.q]\n',
    )
    config = load_config(path, env=_env(tmp_path))
    sales, exact = config.routes
    assert (sales.pattern, sales.profile) == ("_8[0-4]X.", "sales")
    assert sales.regex.pattern == "8[0-4][0-9].+"
    assert sales.matches("8312") and not sales.matches("8512") and not sales.matches("831")
    assert exact.matches("5551000") and not exact.matches("55510000")


def test_sections_are_typed_as_the_toml_says(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[ari]\nurl = "https://127.0.0.1:8089/ari"\napp = "bb"\nusername = "u1"\n'
        'ca_file = "tls/ca.crt"\n\n'
        '[sip]\nhost = "::1"\nport = 5070\ntls_verify_server = true\n'
        'tls_ca_file = "tls/peer.crt"\nbot_media_encryption = "sdes"\n\n'
        "[bridge]\navailability_cache_seconds = 0.5\nagent_ring_in_use = true\n"
        'queue_context = "my-queue"\n\n'
        '[billing]\nrounding = "ceil_6s"\n',
    )
    config = load_config(path, env=_env(tmp_path))
    assert config.ari == AriSettings(
        url="https://127.0.0.1:8089/ari",
        app="bb",
        username="u1",
        password_file="ari-password",
        tls_cert_file="",
        tls_key_file="",
        ca_file="tls/ca.crt",
    )
    assert config.ari.url == "https://127.0.0.1:8089/ari" and config.ari.app == "bb"
    assert isinstance(config.sip, SipSettings)
    assert config.sip.host == "::1" and config.sip.port == 5070
    assert config.sip.tls_verify_server is True and config.sip.tls_ca_file == "tls/peer.crt"
    assert config.sip.bot_media_encryption == "sdes"
    assert config.sip.carrier_media_encryption_optimistic in {True, False}
    assert isinstance(config.bridge, BridgeSettings)
    assert config.bridge.availability_cache_seconds == 0.5
    assert config.bridge.agent_ring_in_use is True
    assert config.bridge.queue_context == "my-queue"
    assert config.billing == BillingSettings(rounding="ceil_6s")
    assert config.billing.rounding == "ceil_6s"
    with pytest.raises(AttributeError, match="immutable"):
        config.sip.port = 1  # type: ignore[misc]


def test_media_and_webhook_settings(tmp_path: Path) -> None:
    config = load_config(
        _toml(
            tmp_path,
            '[sip]\ncarrier_codecs = ["ulaw"]\n'
            '[profiles.default]\ncodecs = ["alaw", "g722"]\ndtmf_mode = "info"\n'
            "decline_transfer_when_closed = true\n"
            '[webhooks]\nurls = ["http://127.0.0.1:9000/hook"]\nmax_attempts = 3\n',
        ),
        env=_env(tmp_path),
    )
    default = config.profiles["default"]
    assert config.sip.carrier_codecs == ("ulaw",) and config.sip.agent_codecs[0] == "g722"
    assert default.codecs == ("alaw", "g722") and default.dtmf_mode == "info"
    assert default.decline_transfer_when_closed
    assert config.webhooks.enabled and config.webhooks.urls == ("http://127.0.0.1:9000/hook",)
    assert config.webhooks.outcomes == ("escalated", "escalation_failed")
    assert config.webhooks.max_attempts == 3
    assert not load_config(env=_env(tmp_path)).webhooks.enabled


def test_ari_connections_stay_within_asterisks_listen_backlog(tmp_path: Path) -> None:
    """More REST connections than Asterisk's HTTP listen backlog (10) would be opened in one
    burst and have their SYNs dropped: the key is refused by name."""
    ok = load_config(_toml(tmp_path, "[limits]\nari_connections = 10\n"), env=_env(tmp_path))
    assert ok.limits.ari_connections == 10
    assert load_config(None, env=_env(tmp_path)).limits.ari_connections == 8
    with pytest.raises(ConfigError, match="ari_connections"):
        load_config(_toml(tmp_path, "[limits]\nari_connections = 11\n"), env=_env(tmp_path))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("BOTBRIDGE_HTTP_ENABLED", "flase", "not a boolean"),
        ("BOTBRIDGE_HTTP_ENABLED", "", "not a boolean"),
        ("BOTBRIDGE_SIP_PORT", "50 60", "not a whole number"),
        ("BOTBRIDGE_SIP_PORT", "5060.5", "not a whole number"),
        ("BOTBRIDGE_DRAIN_SECONDS", "soon", "not a number"),
        ("BOTBRIDGE_MAX_CALLS_PER_SECOND", "1e", "not a number"),
    ],
)
def test_bad_env_boolean_or_number_is_refused_by_name(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=f"{name} .*{expected}"):
        load_config(env=_env(tmp_path, **{name: value}))


@pytest.mark.parametrize(("value", "enabled"), [("false", False), ("Off", False), ("YES", True)])
def test_env_booleans(tmp_path: Path, value: str, enabled: bool) -> None:
    config = load_config(env=_env(tmp_path, BOTBRIDGE_HTTP_ENABLED=value))
    assert config.http.enabled is enabled


def test_defaults_toml_is_the_declared_defaults_with_every_key(tmp_path: Path) -> None:
    """ari_app/defaults.toml explains every setting; its values are the structs' defaults."""
    reference = Path(ari_app.__file__).parent / "defaults.toml"
    assert load_config(reference, env=_env(tmp_path)) == load_config(env=_env(tmp_path))
    written = tomllib.loads(reference.read_text())
    config = load_config(env=_env(tmp_path))
    for name, value in msgspec.structs.asdict(config).items():
        if isinstance(value, msgspec.Struct) and name != "store":
            keys = {f.encode_name for f in msgspec.structs.fields(value)}
            assert set(written[name]) == keys, name
    for table, kind in (("queues", QueueSettings), ("agents", AgentSettings)):
        for name, entry in written[table].items():
            unset = {"ring_in_use"} if kind is QueueSettings else set()
            assert set(entry) | unset == {f.encode_name for f in msgspec.structs.fields(kind)}, name
    profile = set(written["profiles"]["default"])
    assert profile | {"name", "bot_uris", "bots"} == {
        f.encode_name for f in msgspec.structs.fields(config.profiles["default"])
    }


def test_the_shipped_settings_have_no_edge_and_skip_the_tooling_table(tmp_path: Path) -> None:
    reference = Path(ari_app.__file__).parent / "defaults.toml"
    assert "edge" not in tomllib.loads(reference.read_text())
    assert not hasattr(load_config(env=_env(tmp_path)), "edge")
    path = _toml(tmp_path, '[edge]\nnodes = ["10.0.0.1:5060"]\n')
    assert load_config(path, env=_env(tmp_path)) == load_config(env=_env(tmp_path))


def test_an_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sip\.prot: Unknown field\."):
        load_config(_toml(tmp_path, "[sip]\nprot = 5060\n"), env=_env(tmp_path))
