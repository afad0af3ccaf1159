"""The product path: caller -> bot with context -> bot REFER with context -> human queue."""

from __future__ import annotations

import pytest

from ari_app.stack import free_port
from ari_app.devstack import DevStack as Stack
from tests.harness import until

pytestmark = pytest.mark.integration

SEED_UUI_HEX = "657363616c6174655f746f3d6167656e74732d7175657565"  # escalate_to=agents-queue


async def test_escalation_reaches_agent_with_context(stack: Stack) -> None:
    sipp = stack.sipp()
    agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "3000"])
    bot = sipp.start(
        "escalate/bot",
        local_port=stack.bot_port,
        extra=["-d", "1500"],
        keys={
            "refer_user": "escalation",
            "refer_headers": f"?User-to-User={SEED_UUI_HEX}%3Bencoding%3Dhex",
        },
    )
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service="5551000",
        keys={"caller_number": "15550001111"},
    )
    async with stack.rest() as ari:

        async def caller_in_queue():
            for ch in await ari.channels():
                if ch.name.startswith("PJSIP/carrier") and ch.dialplan.app_name == "Queue":
                    return ch
            return None

        queued = await until(caller_in_queue, 20, "caller in Queue()")
        print([(c.name, c.id, c.state) for c in await ari.channels()])
        variables = {
            n: await ari.get_var(queued.id, f"BOTBRIDGE_{n}")
            for n in ("ESCALATE_TO", "QUEUE", "OUTCOME", "CTX_ESCALATE_TO", "ERROR")
        }
    for run in (caller, bot, agent):
        run.wait(30)
    print(stack.app_log_text()[-3000:])
    for run in (caller, bot, agent):
        print(run.report())
    assert "agents-queue" in (queued.dialplan.app_data or "")
    assert variables["ESCALATE_TO"] == "agents-queue"
    assert variables["OUTCOME"] == "escalated"
    assert bot.returncode == 0
    assert agent.returncode == 0
    assert caller.returncode == 0
