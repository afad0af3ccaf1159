"""The shipped Asterisk config does no name lookups on the call path (docs/asterisk-tuning.md).

With RTP bound to a wildcard address, res_rtp_asterisk looked up this host's name and then
A.ROOT-SERVERS.NET for every RTP session (ast_find_ourip, RTCP set-up), on the SIP thread:
with an unanswering DNS server each lookup held call set-up for seconds.
"""

from __future__ import annotations

import pytest

from devtools.devstack import DevStack
from tests.integration.test_call_flow import place_seed_escalation

pytestmark = pytest.mark.integration

LOOKUP_MARKS = ("getaddrinfo(", "ROOT-SERVERS", "Unable to lookup")


async def test_an_escalated_call_makes_asterisk_look_up_no_names(stack: DevStack) -> None:
    log = stack.instance.messages_log
    offset = log.stat().st_size if log.exists() else 0
    # caller, bot and agent legs: three RTP sessions, each one used to trigger two lookups
    call = await place_seed_escalation(stack)
    call.assert_parties_ok()
    with log.open(errors="replace") as fh:
        fh.seek(offset)
        written = fh.read()
    lookups = [line for line in written.splitlines() if any(m in line for m in LOOKUP_MARKS)]
    assert not lookups, "\n".join(lookups[:10])
    rendered = (stack.root / "etc" / "pjsip.conf").read_text()
    assert "bind_rtp_to_media_address = yes" in rendered
