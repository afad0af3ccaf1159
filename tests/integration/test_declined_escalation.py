"""A failed escalation goes back to the bot: with no agent logged in and the profile's
``decline_transfer_when_closed``, the bot's REFER is declined on the wire (202, then NOTIFY
sipfrag 404) and the bot keeps the caller; real Asterisk 22 and SIPp.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ari_app.records import Record
from ari_app.store import InteractionStore
from devtools.devstack import build_stack
from devtools.runtime import Runtime
from devtools.stack import free_port
from tests.harness import all_of, first, sipp_finished, until
from tests.integration.test_call_flow import SEED_ESCALATION_HEX, decode_uui_header

pytestmark = pytest.mark.integration

CALL_TIMEOUT = 40


async def test_refer_declined_when_no_agent_is_logged_in(runtime: Runtime, tmp_path: Path) -> None:
    config_file = tmp_path / "declined.toml"
    config_file.write_text(
        "[bridge]\navailability_cache_seconds = 0\n"
        "[profiles.default]\ndecline_transfer_when_closed = true\n"
        # a queue nobody is logged in to (it has no members at all): business_hours=closed
        'availability_queue = "night-queue"\n'
        "[queues.night-queue]\n"
    )
    stack = build_stack(
        runtime,
        runtime.scratch_root() / f"test-declined-{uuid.uuid4().hex[:8]}",
        free_ports=True,
        extra_env={"BOTBRIDGE_CONFIG": str(config_file)},
    )
    stack.start()
    try:
        sipp = stack.sipp()
        agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "1000"])
        bot = sipp.start(
            "escalate_declined/bot",
            local_port=stack.bot_port,
            keys={
                "refer_user": "escalation",
                "refer_headers": f"?User-to-User={SEED_ESCALATION_HEX}%3Bencoding%3Dhex",
            },
            extra=["-d", "1000"],
        )
        caller = sipp.start(
            "common/caller_waits",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550005555"},
        )
        for run in (bot, caller):
            await sipp_finished(run, CALL_TIMEOUT)
            assert run.wait(1) == 0, run.report()
        iid = first(bot, method="INVITE", direction="received").header("X-Interaction-Id") or ""

        def ended() -> Record | None:
            store = InteractionStore(stack.config.store.url, migrate=False)
            try:
                row = store.get(iid)
            finally:
                store.close()
            return row if row and row["ended_at"] else None

        row = await until(ended, 10, "the record ended")
        agent.stop()
    finally:
        stack.stop()

    invite = first(bot, method="INVITE", direction="received")
    assert decode_uui_header(invite.header("User-to-User") or "") == "business_hours=closed"
    # the REFER was accepted, then declined with a failure sipfrag ending the subscription
    assert first(bot, status=202, direction="received").cseq_method == "REFER"
    notifies = all_of(bot, "NOTIFY")
    assert [n.body.splitlines()[0] for n in notifies] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 404 Not Found",
    ]
    assert (notifies[-1].header("Subscription-State") or "").startswith("terminated")
    # the bot kept the caller: its own BYE ended the call, answered inside the dialog
    assert first(bot, status=200, direction="received", cseq="BYE")
    assert first(caller, method="BYE", direction="received")
    assert not [m for m in agent.messages() if m.method == "INVITE"]
    assert row["outcome"] == "resolved" and row["queue"] is None
    assert row["availability"] == "closed" and row["transfer_at"] is None
