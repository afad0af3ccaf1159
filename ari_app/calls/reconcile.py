"""Reconciliation: records and sessions brought back in line with Asterisk at every connect.

Run by ``CallsHost.reconcile`` each time the ARI event socket (re)connects, before any event
of that connection is handled. Two cases (docs/records.md, "Reconciliation"):

1. A reconnect of the same process: sessions whose caller vanished while the socket was down
   are ended (unfinished calls are ``abandoned``) and forgotten.
2. A start after the app died (``kill -9``, a crash, a host reboot): the store still holds
   this node's open records (``ended_at`` empty) that no session follows.

   - Caller channel gone: the record is closed, ``ended_at`` = now; a record without an
     outcome gets ``outcome=error``, ``error_reason=app_restarted``. A bot leg or a bridge
     of the call still in Asterisk is released.
   - Caller channel still there: the call is re-adopted, a session is rebuilt from the
     record and picks up where the record left off:

     ``bot_connected``: the session follows the call again (the bot's hang-up or a REFER
     arrive as usual); if the bot leg vanished meanwhile, the bot resolved the call.
     ``started``/``bot_dialling``: the dial's outcome was lost; the bot leg is released and
     the caller goes to the fallback queue (``bot_failed``, ``app_restarted``).
     ``transferring``: the REFER was taken but the caller not yet queued; it is queued
     with the routing the record has (``escalated``).
     ``queued``/``resolved``/``error``/``bot_failed`` (caller in the dialplan): the app
     subscribes to the caller again, so the agent's answer and the end are recorded.

3. A caller waiting in the app that nobody follows: its StasisStart was sent as the previous
   connection closed (a drain's last moment, a crash) and never handled, so it would ring
   until it hangs up. It is routed now as if its StasisStart had just come (``pick_up_strays``;
   a draining app does the same once its socket is closed, sending such callers to the
   fallback queue).

Every record touched here gets ``reconciled_at``. A time the app could not observe (the bot
leg ended while the app was down) is left empty rather than guessed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from ari_app.ari import AriConflict, AriError, Channel, Event
from ari_app.calls.control import CallControl
from ari_app.calls.escalation import returns_in
from ari_app.calls.routing import profile_for, queue_for
from ari_app.calls.services import CallServices, RecordSink, bridge_id_for
from ari_app.calls.session import CallSession
from ari_app.calls.states import CallState
from ari_app.calls.transfer import TransferDecision
from ari_app.config import Config
from ari_app.outcomes import Outcome
from ari_app.records import Record, RecordChange, billing, stored_escalations
from ari_app.sip import uui
from ari_app.store import InteractionStore, StoreError


class BatchedRecords(RecordSink, Protocol):
    async def flush(self) -> bool: ...


class CallsHost(Protocol):
    """What reconciliation needs of the app that follows the calls (CallsHost)."""

    @property
    def ari(self) -> CallControl: ...
    @property
    def config(self) -> Config: ...
    @property
    def store(self) -> InteractionStore: ...
    @property
    def records(self) -> BatchedRecords: ...
    @property
    def services(self) -> CallServices: ...
    @property
    def sessions(self) -> dict[str, CallSession]: ...

    def adopt(self, session: CallSession) -> None: ...

    def forget(self, session: CallSession) -> None: ...

    def dispatch(self, event: Event) -> None: ...


log = logging.getLogger(__name__)

APP_RESTARTED = "app_restarted"
# fail open (extensions.conf [botbridge-bypass]): AstDB families of the calls the dialplan
# sent to the fallback queue while the app was not registered, and the reason they record
BYPASS_FAMILY = "botbridge_bypassed"
BYPASS_END_FAMILY = "botbridge_bypassed_end"
APP_UNAVAILABLE = "app_unavailable"
INTERACTION_ID_RE = re.compile(r"[0-9a-f]{32}")
# the channel reconciliation reads AstDB on (extensions.conf [botbridge-probe]); the app's
# router leaves channels entering with PROBE_ARGS alone
PROBE_ENDPOINT = "Local/s@botbridge-probe"
PROBE_ARGS = "reconcile"
PROBE_PREFIX = "probe-"
# where the probe removes the notes of the calls just recorded (extensions.conf)
FORGET_CONTEXT = "botbridge-bypass-forget"
FORGET_VARIABLE = "BOTBRIDGE_FORGET"
PROBE_ATTEMPTS = 20
PROBE_RETRY_SECONDS = 0.05
# where the dialplan runs a caller the app no longer holds
STASIS = "Stasis"


def orphan_bot_part(record: Record, bot_ended_at: float | None, rounding: str) -> RecordChange:
    """Billing columns for a record closed without its session.

    ``bot_ended_at`` is when the app ended a bot leg it found still up (None when the leg was
    already gone). Settled billing is kept; a bot that never answered costs nothing; a bot
    part whose end the app could not observe stays unknown (NULL).
    """
    if record.get("bot_seconds") is not None:
        return {}
    answered = record.get("bot_answered_at")
    if answered is None:
        return billing.no_charge(rounding)
    ended = record.get("transfer_at") or record.get("bot_ended_at") or bot_ended_at
    if ended is None:
        return {"billing_rounding": rounding}
    return {"bot_ended_at": ended, **billing.charge(answered, ended, rounding)}


async def reconcile(app: CallsHost, connection: int, *, handover: bool = False) -> None:
    """Sessions and this node's open records brought in line with Asterisk's channels.
    ``handover``: the open records are those of an instance that let go of its calls after
    handling every event it got (ari_app/calls/handover.py); the events since are still to
    come, so a call is carried on from its record, not failed over as after a crash."""
    channels = {c.id: c for c in await app.ari.channels()}
    now = time.time()
    for caller_id, session in list(app.sessions.items()):
        if caller_id in channels:
            if (channels[caller_id].dialplan.app_name or "") != STASIS:
                await session.follow_caller()  # a new socket may not keep the subscription
            continue
        log.warning("call %s: caller vanished while ARI was disconnected", session.interaction_id)
        try:
            await session.caller_ended()
            session.record(reconciled_at=now)
        except AriError as exc:
            log.warning("call %s: cleanup after reconnect: %s", session.interaction_id, exc)
        app.forget(session)

    try:
        bypassed = await record_bypassed(app)
    except (AriError, StoreError) as exc:
        log.warning("calls that bypassed the app not recorded yet: %s", exc)
        bypassed = 0
    followed = {s.interaction_id for s in app.sessions.values()}
    try:
        records = await app.store.aopen_interactions(app.store.node, include_unowned=True)
    except StoreError:
        log.exception("open records not readable; reconciliation skipped")
        pick_up_strays(app, channels.values())  # a caller is never left ringing
        return
    adopted = closed = 0
    for record in records:
        if record["interaction_id"] in followed:
            continue
        caller = channels.get(record["caller_channel"])
        try:
            if caller is None:
                await close_orphan(app, record, channels)
                closed += 1
            else:
                await adopt(app, record, caller, channels, handover=handover)
                adopted += 1
        except (AriError, StoreError) as exc:
            log.warning("call %s: reconciliation: %s", record["interaction_id"], exc)
    # after the records: the caller of an open record is followed again by now
    strays = pick_up_strays(app, channels.values())
    log.info(
        "ARI connection %d: %d calls followed, %d bypassed calls recorded, "
        "%d open records re-adopted, %d closed, %d unfollowed callers picked up",
        connection,
        len(app.sessions),
        bypassed,
        adopted,
        closed,
        strays,
    )


def waiting_args(channel: Channel, app_name: str) -> tuple[str, ...] | None:
    """The Stasis() arguments of a caller the dialplan handed to the app (``inbound``, see
    extensions.conf) and still in it, else None."""
    dialplan = channel.dialplan
    if (dialplan.app_name or "") != STASIS:
        return None
    app, *args = (dialplan.app_data or "").split(",")
    if app != app_name or args[:1] != ["inbound"]:
        return None
    return tuple(args)


def pick_up_strays(app: CallsHost, channels: Iterable[Channel]) -> int:
    """Route every caller waiting in the app that no session follows as if its StasisStart
    came now (the router ignores a StasisStart of a caller already followed, so one that
    does arrive later is not handled twice). Returns how many were picked up."""
    name = app.config.ari.app
    picked = 0
    for channel in channels:
        args = waiting_args(channel, name)
        if args is None or channel.id in app.sessions:
            continue
        log.warning(
            "caller %s waits in the app unfollowed (its StasisStart was never handled); "
            "taking it now",
            channel.name,
        )
        app.dispatch(Event(type="StasisStart", application=name, channel=channel, args=args))
        picked += 1
    return picked


async def record_bypassed(app: CallsHost) -> int:
    """Record the calls the dialplan sent to the fallback queue while the app was not
    registered ([botbridge-bypass] in extensions.conf notes each in AstDB), then remove the
    notes. A note is removed only after its record is committed, so one seen twice (a crash
    in between) finds its record and is not recorded again. Returns how many were recorded.

    ARI reads dialplan functions only on a channel, and never ``DB()`` (Asterisk keeps it
    from external callers): the notes carry their data in their keys, read with
    ``DB_KEYS()`` on a probe channel (``Local/s@botbridge-probe``, created in the app and
    never dialled), which then removes them in [botbridge-bypass-forget].
    The record is an open one while the call goes on: the loop over open records that
    follows adopts it (the caller is followed to the agent's answer and the end)."""
    probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    await app.ari.create_channel(
        PROBE_ENDPOINT, app.config.ari.app, app_args=PROBE_ARGS, channel_id=probe
    )
    try:
        return await _record_bypassed(app, probe)
    finally:
        await app.ari.hangup(probe)


async def _record_bypassed(app: CallsHost, probe: str) -> int:
    async def keys_of(family: str) -> list[str]:
        for _ in range(PROBE_ATTEMPTS):  # the probe enters the app a moment after its creation
            try:
                value = await app.ari.get_var(probe, f"DB_KEYS({family})")
                break
            except AriConflict:
                await asyncio.sleep(PROBE_RETRY_SECONDS)
        else:
            value = await app.ari.get_var(probe, f"DB_KEYS({family})")
        return [k.strip() for k in (value or "").split(",") if k.strip()]

    recorded = 0
    now = time.time()
    fallback = app.config.profiles["default"].fallback_queue
    seen: list[str] = []
    for iid in await keys_of(BYPASS_FAMILY):
        if INTERACTION_ID_RE.fullmatch(iid) is None:
            log.warning("AstDB %s/%r is no interaction id; left alone", BYPASS_FAMILY, iid)
            continue
        seen.append(iid)
        notes = await keys_of(f"{BYPASS_FAMILY}/{iid}")
        ends = await keys_of(f"{BYPASS_END_FAMILY}/{iid}")
        started_text, caller, dialled, channel = [*(notes[:1] or [""])[0].split("_"), "", "", ""][
            :4
        ]
        started = _float(started_text) or now
        ended = _float(ends[0]) if ends else None
        if await app.store.aget(iid) is None:
            record = billing.no_charge(app.config.billing.rounding)
            record.update(
                {
                    "profile": profile_for(app.config, dialled).name,
                    "dialled_number": uui.safe_value(dialled),
                    "caller_number": uui.safe_value(caller),
                    "caller_channel": uui.safe_value(channel) or iid,
                    "started_at": started,
                    "state": CallState.QUEUED,
                    "outcome": Outcome.BYPASSED,
                    "error_reason": APP_UNAVAILABLE,
                    "queue": fallback,
                    "queued_at": started,
                    "ended_at": ended,
                    "reconciled_at": now,
                }
            )
            app.records.create(iid, **record)
            recorded += 1
            log.warning(
                "call %s: reached %s while the app was down (bypassed); recorded", iid, fallback
            )
    if seen:
        # the notes go only once their records are committed; otherwise they stay in AstDB
        # and the next reconciliation records them again (the write is idempotent)
        if not await app.records.flush():
            log.error(
                "%d bypassed calls' records not yet written; their AstDB notes are kept",
                len(seen),
            )
            return recorded
        await app.ari.set_vars(probe, {FORGET_VARIABLE: ",".join(seen)})
        await app.ari.continue_in_dialplan(probe, FORGET_CONTEXT, "s")
    return recorded


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


async def close_orphan(app: CallsHost, record: Record, channels: dict[str, Any]) -> None:
    """The caller is gone: close the record, release what is left of the call."""
    iid = record["interaction_id"]
    now = time.time()
    bot = record.get("bot_channel")
    bot_alive = bool(bot) and bot in channels
    fields: RecordChange = {"ended_at": now, "reconciled_at": now}
    if record.get("outcome") is None:
        fields.update(
            {"outcome": Outcome.ERROR, "state": CallState.ERROR, "error_reason": APP_RESTARTED}
        )
    fields.update(orphan_bot_part(record, now if bot_alive else None, app.config.billing.rounding))
    app.records.update(iid, **fields)
    log.warning(
        "call %s: caller gone while the app was down; record closed (%s)",
        iid,
        fields.get("outcome") or record.get("outcome"),
    )
    if bot and bot_alive:
        await app.ari.hangup(bot)
    await app.ari.destroy_bridge(bridge_id_for(iid))


async def adopt(
    app: CallsHost,
    record: Record,
    caller: Channel,
    channels: dict[str, Any],
    *,
    handover: bool = False,
) -> None:
    """The caller is still there: rebuild its session and carry on from the record."""
    iid = record["interaction_id"]
    state = CallState(record["state"])
    profile = app.config.profiles.get(record["profile"]) or app.config.profiles["default"]
    session = CallSession(  # with all the app's services, as a new call
        app.services,
        profile,
        caller,
        interaction_id=iid,
        state=state,
        bot_channel_id=record.get("bot_channel"),
        started_at=record["started_at"],
        bot_answered_at=record.get("bot_answered_at"),
        agent_answered_at=record.get("agent_answered_at"),
        availability=record.get("availability"),
        escalations=(escalations := stored_escalations(record)),
        escalation_returns=returns_in(escalations),
        bot_dialogs=record.get("bot_dialogs") or 0,
    )
    if state in {
        CallState.STARTED,
        CallState.BOT_DIALLING,
        CallState.BOT_CONNECTED,
        CallState.TRANSFERRING,
    }:
        # the call's bridge exists from the start (the bot leg is bridged before it is
        # dialled): released with the call like any other
        session.bridge_id = bridge_id_for(iid, session.escalation_returns)
    app.adopt(session)
    app.records.update(iid, reconciled_at=time.time())
    log.log(
        logging.INFO if handover else logging.WARNING,
        "call %s: re-adopted in state %s after %s",
        iid,
        state.value,
        "a handover" if handover else "a restart",
    )
    bot_alive = bool(session.bot_channel_id) and session.bot_channel_id in channels
    in_stasis = (caller.dialplan.app_name or "") == STASIS

    if state is CallState.BOT_CONNECTED:
        await session.resume(record.get("bot_uri"), bot_alive)
        if not bot_alive and not handover:  # in a handover the bot's end event is to come
            await session.bot_left()
            # the bot hung up while nobody watched: when is unknown
            session.record(bot_ended_at=None, bot_seconds=None, billable_minutes=None)
    elif state is CallState.BOT_DIALLING and handover:
        await resume_dialling(app, session, record)
    elif state in {CallState.STARTED, CallState.BOT_DIALLING}:
        await session.bot_failed(APP_RESTARTED)
    elif state is CallState.TRANSFERRING:
        escalate_to = record.get("escalate_to")
        route = queue_for(app.config, profile, escalate_to)
        error = record.get("error_reason") or route.reason or APP_RESTARTED
        pairs = tuple((str(k), str(v)) for k, v in (record.get("context") or {}).items())
        context = uui.Context(pairs) if pairs else None
        decision = TransferDecision(
            queue=route.queue, escalate_to=escalate_to, context=context, error=error
        )
        await session.send_to_queue(decision, outcome=Outcome.ESCALATED, via="refer")
    elif state is CallState.BOT_FAILED and in_stasis:
        reason = record.get("error_reason") or APP_RESTARTED
        decision = TransferDecision(queue=profile.fallback_queue, error=reason)
        await session.send_to_queue(decision, outcome=Outcome.BOT_FAILED, via="bot_failed")
    else:
        if not await session.follow_caller():
            # the caller hung up between the channel list and the subscription: its end
            # will never be reported, so it is recorded now
            await session.caller_ended()
            app.forget(session)
            return
        if session.agent_answered_at is None and state in {CallState.QUEUED, CallState.ERROR}:
            for bridge in await app.ari.bridges():
                if caller.id in bridge.channels:  # the agent answered while the app was down
                    await session.caller_entered_bridge(bridge)
                    break


async def resume_dialling(app: CallsHost, session: CallSession, record: Record) -> None:
    """A call taken over while its bot leg is being set up: the old instance handled every
    event it got, so the leg's next event (its StasisStart, its Dial status, its end) is
    still to come and carries the call on. What the session keeps in memory is restored: the
    bot attempts (the last one's bot claimed) and whether the caller is in the call's bridge
    already (the leg then joins alone)."""
    tried = json.loads(record.get("bots_tried") or "[]")
    session.bots.resume(tried)
    for bridge in await app.ari.bridges():
        if bridge.id == session.bridge_id:
            session._caller_bridged = session.caller_id in bridge.channels
            break
