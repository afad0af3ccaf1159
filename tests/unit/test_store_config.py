"""Configuration of the interaction store and of billing: [store] url/node, [billing]."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ari_app.config import ConfigError, load_config
from ari_app.store import open_store


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BOTBRIDGE_STATE_DIR": str(tmp_path / "state"), "BOTBRIDGE_ARI_PASSWORD": "x", **extra}


def test_default_is_a_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    config = load_config(env=_env(tmp_path))
    state = (tmp_path / "state").resolve()
    assert config.store.url == f"sqlite:///{state}/interactions.sqlite3"
    assert config.store.node == f"{socket.gethostname()}/127.0.0.1:8088/botbridge"
    assert config.billing.rounding == "ceil_minute"
    store = open_store(config)
    try:
        assert store.path == state / "interactions.sqlite3" and store.path.exists()
        assert store.node == config.store.node
    finally:
        store.close()


def test_database_url_from_the_environment_and_the_file(tmp_path: Path) -> None:
    url = "postgresql+psycopg://bridge:s3cret@db.example:5432/botbridge"
    config = load_config(env=_env(tmp_path, BOTBRIDGE_DATABASE_URL=url))
    assert config.store.url == url
    assert "s3cret" not in repr(config)
    toml = tmp_path / "bb.toml"
    toml.write_text(
        '[store]\nurl = "sqlite:////var/lib/bb/records.db"\nnode = "edge-1"\n'
        '[billing]\nrounding = "ceil_6s"\n'
    )
    config = load_config(env=_env(tmp_path, BOTBRIDGE_CONFIG=str(toml)))
    assert config.store.url == "sqlite:////var/lib/bb/records.db"
    assert config.store.node == "edge-1"
    assert config.billing.rounding == "ceil_6s"


def test_node_and_rounding_from_the_environment(tmp_path: Path) -> None:
    config = load_config(
        env=_env(tmp_path, BOTBRIDGE_STORE_NODE="pod-7", BOTBRIDGE_BILLING_ROUNDING="exact")
    )
    assert config.store.node == "pod-7" and config.billing.rounding == "exact"


def test_an_unknown_rounding_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"billing\.rounding"):
        load_config(env=_env(tmp_path, BOTBRIDGE_BILLING_ROUNDING="floor"))
