"""A call's bots: which one is dialled next, for how long, and what its INVITE carries.

:class:`BotAttempts` is the bot part of one call's state: its plan of bots (made once, by
the app's pool, ari_app/calls/bots.py), the bot claimed now, every attempt with its result
(the record's ``bots_tried``) and the answer timeout's budget. :func:`bot_leg_variables`
are the channel variables of a bot leg: the SIP headers of its INVITE. Pure, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ari_app.calls.bots import BotPool
from ari_app.calls.carrier import CallerFacts
from ari_app.calls.services import AVAILABILITY_CLOSED
from ari_app.config import BotProfile, BotTarget
from ari_app.config.dialplan import TRANSFER_CONTEXT
from ari_app.records import BotAttempt
from ari_app.sip import uui

__all__ = [
    "BOT_ANSWERED_RESULT",
    "DECLINED_TRANSFER_CONTEXT",
    "MIN_ATTEMPT_SECONDS",
    "NO_BOT_AVAILABLE",
    "BotAttempts",
    "bot_leg_variables",
]

# the bot's TRANSFER_CONTEXT when its REFER is to be declined (an empty dialplan context)
DECLINED_TRANSFER_CONTEXT = "botbridge-transfer-declined"
# every bot was unreachable or at its limits: the call went to the fallback queue undialled
NO_BOT_AVAILABLE = "bot_unavailable"
# a next bot is dialled only while at least this much of the answer timeout is left (ARI's
# dial timeout counts whole seconds)
MIN_ATTEMPT_SECONDS = 1.0
BOT_ANSWERED_RESULT = "answered"


@dataclass(eq=False)
class BotAttempts:
    """The bots of one call: the plan, the claimed bot (counted by the pool while it is
    dialled or talks), the attempts so far and the answer timeout's deadline."""

    pool: BotPool
    profile: BotProfile
    target: BotTarget | None = None
    count: int = 0  # bots dialled
    deadline: float = 0.0  # time.monotonic() by which a bot must answer; 0: unknown
    _plan: tuple[BotTarget, ...] = ()
    _next: int = 0
    _tried: list[BotAttempt] = field(default_factory=list)

    def begin(self) -> None:
        """A new call, or a new bot dialog of a returned caller: a new plan from its first
        bot, and the answer timeout starts (the attempts so far are kept)."""
        self.deadline = time.monotonic() + self.profile.answer_timeout_seconds
        self._plan = self.pool.plan(self.profile)
        self._next = 0

    def claim_next(self) -> bool:
        """Claim the next eligible bot of the plan; bots passed over (unreachable, at a
        limit) go into the attempts with why. False when none is left."""
        claim = self.pool.claim(self._plan, self._next)
        self._next = claim.next_index
        self._tried.extend({"uri": uri, "result": why} for uri, why in claim.skipped)
        if claim.target is None:
            return False
        self.target = claim.target
        self.count += 1
        self._tried.append({"uri": claim.target.uri, "result": None})
        return True

    def hold(self, uri: str | None) -> None:
        """A call re-adopted with its bot connected: that bot counts as claimed again."""
        target = next((t for t in self.profile.targets if t.uri == uri), None)
        if target is not None:
            self.pool.hold(target.uri)
            self.target = target

    def resume(self, tried: list[BotAttempt]) -> None:
        """A call taken over while its bot is dialled (ari_app/calls/handover.py): the
        attempts so far, the last one's bot claimed again. The plan and the answer timeout's
        budget stay unknown: no next bot is tried, a failure goes to the fallback queue."""
        self._tried = [{"uri": a["uri"], "result": a["result"]} for a in tried]
        self.count = sum(1 for a in self._tried if not str(a["result"] or "").startswith("skip"))
        if self._tried and self._tried[-1]["result"] is None:
            self.hold(self._tried[-1]["uri"])

    def release(self) -> None:
        """The claimed bot's part is over (failed, ended, transferred)."""
        if self.target is not None:
            self.pool.release(self.target.uri)
        self.target = None

    def result(self, result: str, *, unless_set: bool = False) -> str | None:
        """Set the last attempt's result; its bot's URI (None without any attempt)."""
        if not self._tried:
            return None
        last = self._tried[-1]
        if not (unless_set and last["result"] is not None):
            last["result"] = result
        return last["uri"]

    def tried(self) -> list[BotAttempt]:
        """The attempts as they are now (the record writer encodes them later)."""
        return [{"uri": a["uri"], "result": a["result"]} for a in self._tried]

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def dial_timeout(self) -> int:
        """Dial timeout of this attempt: what is left of the answer timeout, and at most
        ``attempt_timeout_seconds`` while another bot could still be tried."""
        left = self.time_left() if self.deadline else 0.0
        if left <= 0:
            return self.profile.answer_timeout_seconds  # re-adopted call: no budget known
        if self._next < len(self._plan):
            left = min(left, self.profile.attempt_timeout_seconds)
        return max(1, round(left))


def bot_leg_variables(
    profile: BotProfile,
    interaction_id: str,
    caller: CallerFacts,
    availability: str,
    context: Sequence[tuple[str, str]] = (),
    *,
    consult_on: bool = False,
) -> dict[str, str]:
    """The bot leg's channel variables: its INVITE's headers (the UUI with business_hours,
    or ``context`` when given, then the profile's context keys, the queue figures those of
    its default_queue as the call came in; the interaction id, the
    profile's extra headers, the carrier headers it copies, the verstat header), the
    caller's number, and the transfer context: declined when nobody could take the caller,
    else ``botbridge-transfer`` when the bot endpoint's own context takes consult calls
    (``consult_on``: some profile has warm_transfer)."""
    facts = {
        "dialled": caller.dialled,
        "caller": caller.number,
        "verstat": caller.carrier.verstat,
        **caller.queues.get(profile.default_queue, {}),
    }
    pairs = list(context or [("business_hours", availability)])
    # a queue figure the dialplan did not read (an older dialplan) is left out
    pairs += [(key, uui.safe_value(facts[key])) for key in profile.context_keys if key in facts]
    headers = {
        **caller.carrier.allowed(profile.carrier_headers),
        "User-to-User": uui.format_uui(
            uui.encode_context(pairs), discriminator=profile.uui_discriminator
        ),
        profile.interaction_header: interaction_id,
        **profile.extra_headers,
    }
    if profile.verstat_header:
        headers[profile.verstat_header] = caller.carrier.verstat
    variables = {f"PJSIP_HEADER(add,{name})": value for name, value in headers.items()}
    number = uui.safe_value(caller.number)
    if number:
        variables["CALLERID(num)"] = number
    if profile.decline_transfer_when_closed and availability == AVAILABILITY_CLOSED:
        # nobody to take the caller: a REFER gets 202 then NOTIFY 404, the bot keeps it
        variables["TRANSFER_CONTEXT"] = DECLINED_TRANSFER_CONTEXT
    elif consult_on:
        variables["TRANSFER_CONTEXT"] = TRANSFER_CONTEXT
    return variables
