"""``[queues]``, ``[agents]`` and ``[external_targets]``: what check-config refuses (naming
the key) and what the renderer writes into queues.conf, pjsip.conf and extensions.conf."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ari_app import cli
from ari_app.asterisk import render, render_instance, template_text, template_values
from ari_app.config import Config, ConfigError, load_config
from ari_app.config.queues import answering_agent
from ari_app.reporting.figures import NO_VALUE, group_key

PASSWORD = "s3cret-from-config-7f1c"
DIRS = {
    "ETC_DIR": "/e",
    "VARLIB_DIR": "/l",
    "SPOOL_DIR": "/s",
    "RUN_DIR": "/r",
    "LOG_DIR": "/g",
    "TLS_DIR": "/t",
    "TLS_CERT_FILE": "/t/c",
    "TLS_KEY_FILE": "/t/k",
}
HUMAN_SIDE = """
[routing]
support = "support-queue"
acme = "acme"
[queues.support-queue]
strategy = "linear"
timeout_seconds = 7
music_on_hold = "default"
announce_position = "yes"
max_waiting = 20
[agents.alice]
contact = "sip:alice@192.0.2.5:5060"
queues = { support-queue = 0, agents-queue = 3 }
membership = "static"
[agents.carol]
password_file = "carol.secret"
max_contacts = 2
queues = { support-queue = 1 }
[external_targets.acme]
address = "192.0.2.10:5070"
destination = "+4930123456"
username = "bridge"
password_file = "acme.secret"
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {"BOTBRIDGE_STATE_DIR": str(tmp_path), "BOTBRIDGE_ARI_PASSWORD": PASSWORD}


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "botbridge.toml"
    path.write_text(text)
    return load_config(path, env=_env(tmp_path))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[routing]\nsales = "sales-queue"\n', "routing.sales"),
        ('[profiles.default]\nfallback_queue = "nope"\n', "profiles.default.fallback_queue"),
        ('[profiles.default]\ndefault_queue = "nope"\n', "profiles.default.default_queue"),
        ('[profiles.default]\noverflow_target = "nope"\n', "profiles.default.overflow_target"),
        (
            '[agents.x]\ncontact = "sip:x@127.0.0.1"\nqueues = { nope = 0 }\n',
            "agents.x.queues.nope",
        ),
        (
            '[external_targets.agents-queue]\naddress = "192.0.2.1:5060"\ndestination = "1"\n',
            "external_targets.agents-queue",
        ),
        ("[agents.x]\nqueues = { agents-queue = 0 }\n", "agents.x.contact"),
        ('[agents.carrier]\ncontact = "sip:c@127.0.0.1"\n', "agents.carrier"),
        ('[queues.a]\nstrategy = "fastest"\n', "queues.a.strategy"),
        ('[queues.a]\njoin_empty = "maybe"\n', "queues.a.join_empty"),
        (
            '[external_targets.t]\naddress = "cc.example.com:5060"\ndestination = "1"\n',
            "external_targets.t.address",
        ),
    ],
)
def test_a_queue_or_agent_that_does_not_fit_is_refused_by_its_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"invalid configuration: {key}\b"):
        _load(tmp_path, toml)


def test_check_config_names_the_routing_key_of_an_undefined_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "botbridge.toml"
    path.write_text('[routing]\nsales = "sales-queue"\n')
    monkeypatch.setenv("BOTBRIDGE_STATE_DIR", str(tmp_path))
    assert cli.main(["--config", str(path), "check-config"]) == 2
    assert "routing.sales: 'sales-queue' is neither a [queues]" in capsys.readouterr().err


def test_queues_are_added_to_the_shipped_ones_and_agents_replace_the_shipped_agent(
    tmp_path: Path,
) -> None:
    (tmp_path / "acme.secret").write_text("trunk-pw\n")
    config = _load(tmp_path, HUMAN_SIDE)
    assert list(config.queues) == ["agents-queue", "billing-queue", "support-queue"]
    assert list(config.agents) == ["alice", "carol"]
    assert load_config(env=_env(tmp_path)).agents["agent1"].membership == "static"


def _rendered(config: Config) -> dict[str, str]:
    values = template_values(config, DIRS, "/m")
    return {name: render(template_text(name), values) for name in ("queues.conf", "pjsip.conf")}


def test_queues_and_static_members_are_rendered(tmp_path: Path) -> None:
    (tmp_path / "acme.secret").write_text("trunk-pw\n")
    queues = _rendered(_load(tmp_path, HUMAN_SIDE))["queues.conf"]
    support = queues.split("[support-queue]")[1]
    for line in (
        "strategy = linear",
        "timeout = 7",
        "musicclass = default",
        "announce-position = yes",
        "maxlen = 20",
        "member => PJSIP/alice,0,alice",
    ):
        assert f"\n{line}\n" in support, line
    assert "carol" not in queues  # dynamic: app_queue's member once logged in
    assert "member => PJSIP/alice,3,alice" in queues.split("[agents-queue]")[1]
    assert "persistentmembers = yes" in queues


def test_a_softphone_and_a_trunk_are_rendered_with_their_secrets(tmp_path: Path) -> None:
    (tmp_path / "acme.secret").write_text("trunk-pw\n")
    pjsip = _rendered(_load(tmp_path, HUMAN_SIDE))["pjsip.conf"]
    softphone_secret = (tmp_path / "carol.secret").read_text().strip()  # made when absent
    assert len(softphone_secret) >= 16
    assert "identify_by = username\nauth = carol\n" in pjsip
    assert "type = aor\nmax_contacts = 2\nremove_existing = yes\n" in pjsip
    assert f"username = carol\npassword = {softphone_secret}\n" in pjsip
    assert "[botbridge-ext-acme]\ntype = aor\ncontact = sip:192.0.2.10:5070;transport=udp" in pjsip
    assert "outbound_auth = botbridge-ext-acme\n" in pjsip
    assert "username = bridge\npassword = trunk-pw\n" in pjsip
    permit = pjsip.split("[signalling-allow-list]")[1].split("\n\n")[0]
    assert "192.0.2.10" in permit  # the trunk's BYE is let through


def test_a_trunk_password_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"external_targets\.acme\.password_file"):
        _rendered(_load(tmp_path, HUMAN_SIDE))


def test_the_dialplan_dials_only_the_configured_destination(tmp_path: Path) -> None:
    (tmp_path / "acme.secret").write_text("trunk-pw\n")
    config = _load(tmp_path, HUMAN_SIDE)
    dialplan = render(template_text("extensions.conf"), template_values(config, DIRS, "/m"))
    assert (
        "exten => acme,1,Dial(PJSIP/+4930123456@botbridge-ext-acme,30,"
        "b(botbridge-agent-predial^s^1))"
    ) in dialplan
    # a failure goes back to the app as a failed queue's QUEUESTATUS would
    assert (
        " same => n,Stasis(botbridge,queue_ended,"
        '${IF($["${DIALSTATUS}" = "NOANSWER"]?TIMEOUT:'
        '${IF($["${DIALSTATUS}" = "BUSY"]?FULL:JOINUNAVAIL)})})\n'
    ) in dialplan
    assert "BOTBRIDGE_EXTERNAL_acme = 1" in dialplan
    assert "BOTBRIDGE_QOPTS_support-queue = \n" in dialplan  # music, not ringing
    assert "BOTBRIDGE_QOPTS_agents-queue = r\n" in dialplan
    # without targets the queue context's first step is the Queue() itself
    plain = render(
        template_text("extensions.conf"),
        template_values(load_config(env=_env(tmp_path)), DIRS, "/m"),
    )
    assert "exten => s,1,Queue(${BOTBRIDGE_QUEUE}," in plain


def test_an_overflow_target_may_be_an_external_target(tmp_path: Path) -> None:
    (tmp_path / "acme.secret").write_text("trunk-pw\n")
    text = HUMAN_SIDE + '[profiles.default]\noverflow_target = "acme"\n'
    assert _load(tmp_path, text).profiles["default"].overflow_target == "acme"


def test_pjsip_conf_is_private(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    render_instance(config, tmp_path / "inst", module_dir="/m")
    mode = (tmp_path / "inst" / "etc" / "pjsip.conf").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize(
    ("channel", "agent"),
    [
        ("PJSIP/alice-0000002a", "alice"),
        ("PJSIP/botbridge-ext-acme-0000002b", "acme"),
        ("PJSIP/agent1-00000001", "agent1"),
    ],
)
def test_the_answering_agent_is_named_from_its_channel(channel: str, agent: str) -> None:
    assert answering_agent(channel) == agent


def test_reports_group_by_the_answering_agent() -> None:
    assert group_key({"agent": "alice"}, "agent") == "alice"
    assert group_key({}, "agent") == NO_VALUE  # nobody answered


def test_the_bench_pool_and_external_target_are_valid_configuration(tmp_path: Path) -> None:
    from devtools.bench_targets import BENCH_AGENTS, configured_agents, external_target

    pool = _load(tmp_path, configured_agents(5090))
    assert len(pool.agents) == BENCH_AGENTS
    queues = _rendered(pool)["queues.conf"]
    assert queues.count("member => PJSIP/a") == 2 * BENCH_AGENTS
    assert "strategy = rrmemory\n" in queues and "ringinuse = yes" not in queues
    external = _load(tmp_path, external_target(5090))
    assert external.routing == {"agents-queue": "bench-acd"}
    assert external.external_targets["bench-acd"].address == "127.0.0.1:5090"
