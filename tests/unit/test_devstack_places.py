"""Where `make up` and `make restart` put the stack, and the restart's refusal of a shell
that would change what the running stack uses (devtools/devstack.py). Pure logic: no
Asterisk is asked, a refusal comes before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_app.config import load_config
from devtools.devstack import StackPlaces, check_same_stack, stack_places, stack_settings
from devtools.stack import StackError


def test_places_default_to_var_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    places = stack_places({})
    assert places == StackPlaces(run_dir=tmp_path / "var" / "run", state_dir=tmp_path / "var")
    # the same state directory the app itself defaults to
    assert load_config(env=places.env).state_dir == load_config(env={}).state_dir


def test_places_follow_the_environment_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    places = stack_places({"BOTBRIDGE_RUN_DIR": "r", "BOTBRIDGE_STATE_DIR": str(tmp_path / "s")})
    assert places.run_dir == tmp_path / "r"
    assert places.state_dir == tmp_path / "s"
    assert places.info_path == tmp_path / "r" / "stack.json"


def test_a_restart_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    env = {"BOTBRIDGE_STATE_DIR": str(tmp_path / "up"), "BOTBRIDGE_ARI_PASSWORD": "x"}
    recorded = stack_settings(load_config(env=env))
    moved = {**env, "BOTBRIDGE_STATE_DIR": str(tmp_path / "other"), "BOTBRIDGE_HTTP_PORT": "1"}
    with pytest.raises(StackError) as refused:
        check_same_stack({"settings": recorded}, load_config(env=moved))
    message = str(refused.value)
    assert f"state_dir {tmp_path / 'up'} -> {tmp_path / 'other'}" in message
    host = recorded["http"].rsplit(":", 1)[0]
    assert f"http {recorded['http']} -> {host}:1" in message
    assert "sqlite:///" in message and "other" in message  # the store moves with it
    assert "left alone" in message
