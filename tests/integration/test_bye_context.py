"""Context on the bot's BYE ([bye_context], read from Asterisk's HEP capture): real Asterisk 22,
SIPp caller, bot and agent. escalate_to on the BYE sends the caller to that queue as an
escalation; any other context is recorded and the call is resolved.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SippRun
from devtools.stack import free_port
from tests.harness import first, queued_caller, sipp_finished, until
from tests.integration.test_call_flow import decode_uui_header, final_record

pytestmark = pytest.mark.integration

CALL_TIMEOUT = 40


@pytest.fixture(scope="module")
def hep_stack(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    config_file = tmp_path_factory.mktemp("bye") / "bye.toml"
    config_file.write_text(
        f"[bye_context]\nenabled = true\ncapture_port = {free_port(udp_too=True)}\n"
    )
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-bye-{tmp_path_factory.getbasetemp().name}",
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config_file)},
    )
    stack.start()
    yield stack
    stack.stop()


def start_parties(
    stack: DevStack, context: str, *, agent: bool
) -> tuple[SippRun, SippRun, SippRun | None]:
    sipp = stack.sipp()
    agent_run = (
        sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "1000"])
        if agent
        else None
    )
    bot = sipp.start(
        "bye_context/bot",
        local_port=stack.bot_port,
        keys={"bye_uui": context.encode().hex() + ";encoding=hex"},
        extra=["-d", "1500"],
    )
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": "15550006666"},
    )
    return caller, bot, agent_run


async def test_bye_with_escalate_to_queues_the_caller(hep_stack: DevStack) -> None:
    caller, bot, agent = start_parties(hep_stack, "escalate_to=billing;order=A-9", agent=True)
    async with hep_stack.rest() as ari:
        queued = await until(lambda: queued_caller(ari), 25, "the caller in Queue()")
        queue_args = queued.dialplan.app_data or ""
        escalate_to = await ari.get_var(queued.id, "BOTBRIDGE_ESCALATE_TO")
        outcome = await ari.get_var(queued.id, "BOTBRIDGE_OUTCOME")
    assert agent is not None
    for run in (caller, bot, agent):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    assert queue_args.startswith("billing-queue,")
    assert escalate_to == "billing" and outcome == "escalated"
    agent_invite = first(agent, method="INVITE", direction="received")
    assert agent_invite.header("X-Escalate-To") == "billing"
    assert decode_uui_header(agent_invite.header("User-to-User") or "") == (
        "escalate_to=billing;order=A-9"
    )
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    row = await final_record(hep_stack, iid or "", "escalated")
    assert row["queue"] == "billing-queue" and row["escalate_to"] == "billing"
    assert row["context"] == {"escalate_to": "billing", "order": "A-9"}
    assert row["transfer_at"] and row["bot_ended_at"] == row["transfer_at"]
    assert row["agent_answered_at"]


async def test_bye_with_other_context_is_resolved_and_recorded(hep_stack: DevStack) -> None:
    caller, bot, _ = start_parties(hep_stack, "outcome=paid;amount=12", agent=False)
    for run in (caller, bot):
        await sipp_finished(run, CALL_TIMEOUT)
        assert run.wait(1) == 0, run.report()
    assert first(caller, method="BYE", direction="received")
    iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id")
    row = await final_record(hep_stack, iid or "", "resolved")
    assert row["context"] == {"outcome": "paid", "amount": "12"}
    assert row["queue"] is None and row["transfer_at"] is None
