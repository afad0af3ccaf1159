"""Secrets never printed, secret files never empty, values that could change a rendered file
refused (docs/security.md, "Secrets")."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ari_app.asterisk import RenderError, render_instance
from ari_app.cli import effective_values
from ari_app.config import ConfigError, hep_password, load_config, mask_url
from ari_app.reporting.webhooks import webhook_secret
from ari_app.store import InteractionStore, make_engine
from devtools.edge_config import load_edge

PG_URL = "postgresql+psycopg://bb@db.example:5432/bb?sslmode=require&password=pg-s3cret"
HOOK_URL = "https://hook-user:hook-s3cret@crm.example/in?token=tok-s3cret&site=7"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BOTBRIDGE_STATE_DIR": str(tmp_path), "BOTBRIDGE_ARI_PASSWORD": "pw", **extra}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # a lone user name may be a token: masked too
        (PG_URL, "postgresql+psycopg://***@db.example:5432/bb?sslmode=require&password=***"),
        (HOOK_URL, "https://hook-user:***@crm.example/in?token=***&site=7"),
        ("https://s3cret@crm.example/in", "https://***@crm.example/in"),
        (
            "https://crm.example/in?api_key=k&Signature=s",
            "https://crm.example/in?api_key=***&Signature=***",
        ),
        ("http://[::1]:9000/hook?secret=x", "http://[::1]:9000/hook?secret=***"),
        ("sqlite:////var/lib/bb/records.db", "sqlite:////var/lib/bb/records.db"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_check_config_and_repr_show_no_url_secret(tmp_path: Path) -> None:
    config = load_config(
        env=_env(tmp_path, BOTBRIDGE_DATABASE_URL=PG_URL),
        overrides={"webhooks": {"urls": [HOOK_URL]}},
    )
    shown = f"{effective_values(config)!r} {config!r} {config.store!r} {config.webhooks!r}"
    for secret in ("pg-s3cret", "hook-s3cret", "tok-s3cret"):
        assert secret not in shown
    assert effective_values(config)["webhooks"]["urls"] == [mask_url(HOOK_URL)]
    assert effective_values(config)["store"]["url"] == mask_url(PG_URL)


def test_the_store_shown_at_start_up_hides_its_password() -> None:
    store = InteractionStore(PG_URL.replace("bb@", "bb:user-s3cret@"), migrate=False)
    try:
        assert "s3cret" not in repr(store)  # main logs "interaction store %r"
        assert "password=***" in repr(store) and "bb:***@" in repr(store)
    finally:
        store.close()


def test_a_bad_store_url_is_refused_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"store\.url") as caught:
        load_config(env=_env(tmp_path, BOTBRIDGE_DATABASE_URL="nonsense://u:pw-s3cret@h:x/db"))
    assert "pw-s3cret" not in str(caught.value)


def test_database_errors_do_not_show_bound_parameters(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(make_url("sqlite://"))
    with pytest.raises(SQLAlchemyError) as caught, engine.connect() as connection:
        connection.execute(
            text("SELECT * FROM no_such_table WHERE caller = :n"), {"n": "+33612345678"}
        )
    logging.getLogger("test").error("write failed: %s", caught.value)
    assert "+33612345678" not in str(caught.value) and "+33612345678" not in caplog.text
    assert "hidden due to hide_parameters" in str(caught.value)


@pytest.mark.parametrize("name", ["ari.conf", "hep.conf", "pjsip.conf"])
def test_secret_bearing_files_are_rendered_owner_only(tmp_path: Path, name: str) -> None:
    config = load_config(env=_env(tmp_path), overrides={"bye_context": {"enabled": True}})
    target = tmp_path / "instance" / "etc" / name
    target.parent.mkdir(parents=True)
    target.write_text("old")
    target.chmod(0o644)  # a file left by an earlier render keeps no wider mode
    render_instance(config, tmp_path / "instance", module_dir="/usr/lib/asterisk/modules")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "old" not in target.read_text()


def test_an_empty_hep_password_file_is_refused_by_name(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path), overrides={"bye_context": {"enabled": True}})
    (tmp_path / "hep-password").write_text("\n")
    with pytest.raises(ConfigError, match=r"bye_context\.password_file.*hep-password.*empty"):
        hep_password(config)
    with pytest.raises(RenderError, match=r"bye_context\.password_file"):
        render_instance(config, tmp_path / "instance", module_dir="/usr/lib/asterisk/modules")


def test_an_empty_webhook_secret_file_is_refused_by_name(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    (tmp_path / "webhook-secret").write_text("  \n")
    with pytest.raises(ConfigError, match=r"webhooks\.secret_file.*webhook-secret.*empty"):
        webhook_secret(config, env={})


@pytest.mark.parametrize("password", ["pw\n[evil]\ntype = user", "pw;rest", "pw\r", "pw\x00x"])
def test_an_ari_password_that_would_change_ari_conf_is_refused(
    tmp_path: Path, password: str
) -> None:
    with pytest.raises(ConfigError, match=r"BOTBRIDGE_ARI_PASSWORD.*without them"):
        load_config(env=_env(tmp_path, BOTBRIDGE_ARI_PASSWORD=password))


def test_an_ari_password_file_that_would_change_ari_conf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ari-password").write_text("first;second\n")
    with pytest.raises(ConfigError, match="ari-password"):
        load_config(env={"BOTBRIDGE_STATE_DIR": str(tmp_path)})


# one value per validation pattern, valid as it is and refused with a trailing newline
# (a pattern written ^...$ accepts one). ari.url, smtp.from and http.host were refused before
# too (library validators); they guard the checks that replaced those.
ANCHORED = [
    ("ari", "url", "http://127.0.0.1:8088/ari"),
    ("ari", "app", "botbridge"),
    ("ari", "username", "botbridge"),
    ("sip", "carrier_match", "127.0.0.1"),
    ("sip", "bot_match", "127.0.0.1"),
    ("sip", "agent_match", "127.0.0.1"),
    ("sip", "agent_contact", "sip:agent1@127.0.0.1:5090"),
    ("bridge", "availability_variable", "BOTBRIDGE_AGENT_AVAILABILITY"),
    ("bridge", "queue_context", "botbridge-queue"),
    ("profiles.default", "bot_endpoint", "voicebot"),
    ("profiles.default", "bot_uri", "sip:voicebot@127.0.0.1:5080"),
    ("profiles.default", "fallback_queue", "agents-queue"),
    ("profiles.default", "interaction_header", "X-Interaction-Id"),
    ("profiles.default", "post_bot_context", "after-bot"),
    ("routing", "billing", "billing-queue"),
    ("smtp", "from", "reports@example.com"),
    ("http", "host", "127.0.0.1"),
]


@pytest.mark.parametrize(("section", "key", "value"), ANCHORED)
def test_every_pattern_refuses_a_trailing_newline(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    def load(text: str) -> object:
        head, _, name = section.partition(".")
        table: dict[str, object] = {key: text}
        return load_config(env=_env(tmp_path), overrides={head: {name: table} if name else table})

    load(value)
    with pytest.raises(ConfigError, match=key):
        load(value + "\n")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[profiles.default]\nextra_headers = { "X-Tenant" = "acme\\n" }\n', "extra_headers"),
        ('[profiles.default]\nextra_headers = { "X-Tenant\\n" = "acme" }\n', "extra_headers"),
        ('[[routes]]\npattern = "_X.\\n"\nprofile = "default"\n', "routes.0.pattern"),
        (
            '[profiles.default]\nbot_uris = ["sip:a@127.0.0.1:5080\\n"]\n',
            "profiles.default.bot_uris.0",
        ),
        (
            '[smtp]\nhost = "mail"\n[[report_schedules]]\ncron = "0 7 * * *"\n'
            'period = "previous_day"\nrecipients = ["a@example.com"]\nname = "daily\\n"\n',
            "report_schedules.0.name",
        ),
    ],
)
def test_lists_and_tables_refuse_a_trailing_newline(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, env=_env(tmp_path))
    path.write_text(toml.replace("\\n", ""))
    load_config(path, env=_env(tmp_path))


def test_edge_node_pattern_refuses_a_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[edge]\nnodes = ["10.0.0.1:5060\\n"]\n')
    with pytest.raises(ConfigError, match=r"edge\.nodes\.0"):
        load_edge(path, env={})
    path.write_text('[edge]\nnodes = ["10.0.0.1:5060"]\n')
    assert load_edge(path, env={}).nodes == ("10.0.0.1:5060",)
