"""``make demo``'s core on free ports: the escalating call succeeds and the timeline shows it."""

from __future__ import annotations

import re

import pytest

from devtools.demo import run_demo
from devtools.devstack import build_stack
from devtools.runtime import Runtime

# load, restart and benchmark runs last minutes: a longer per-test limit than the default
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def test_demo_escalates_with_context_and_prints_timeline(
    runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = runtime.scratch_root() / f"test-demo-{tmp_path_factory.getbasetemp().name}"
    stack = build_stack(runtime, root, free_ports=True)
    progress: list[str] = []

    result = run_demo(stack, progress=progress.append)

    account = "\n".join([*progress, result.render(), *result.reports.values()])
    assert result.checks, account
    assert all(result.checks.values()), account
    assert result.ok, account
    assert result.summary().startswith("DEMO OK: caller reached agents-queue"), account
    assert "app registered" in "\n".join(progress)
    # the bot's blind transfer, with the context it embeds, decoded for the reader
    assert re.search(r"bot -> asterisk\s+REFER sip:", result.timeline), result.timeline
    assert "= escalate_to=agents-queue" in result.timeline
    # the agent's INVITE, carrying the context and the interaction id
    assert re.search(r"asterisk -> agent\s+INVITE sip:agent1@", result.timeline), result.timeline
    assert f"X-Interaction-Id: {result.interaction_id}" in result.timeline
    assert "business_hours=" in result.timeline
    assert result.record is not None and result.record["outcome"] == "escalated"
