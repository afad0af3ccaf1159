"""``make demo``: one call through the bridge, end to end, with a readable account of it.

A SIPp carrier calls the bridge, the app dials a SIPp voice bot with its context, the bot
blind-transfers with a REFER carrying ``escalate_to=agents-queue`` and the caller lands in
that queue, whose SIPp agent gets the context on its INVITE. While the agent talks, the
caller's channel and ``BOTBRIDGE_*`` variables are read through ARI; afterwards the three
SIPp traces and the app's decisions are merged into one timeline.

``run_demo`` does the work on any ``DevStack`` (the integration test gives it free ports);
``main`` runs it on the built-in default ports, which is what a new user's first command
exercises.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from ari_app.ari import AriError, AriRest, Channel
from ari_app.calls.transfer import (
    VAR_CONTEXT,
    VAR_CONTEXT_KEY,
    VAR_ERROR,
    VAR_ESCALATE_TO,
    VAR_INTERACTION_ID,
    VAR_OUTCOME,
    VAR_QUEUE,
    VAR_UUI,
)
from ari_app.records import Record
from ari_app.sip import parse_refer_to, uui
from ari_app.store import InteractionStore
from devtools.devstack import DevStack, build_stack
from devtools.runtime import RuntimeUnavailable, select_runtime
from devtools.sipp import SipMessage, SippRun
from devtools.stack import StackError, free_port

DEMO_DIR_NAME = "demo"
PREVIOUS_APP_LOG = "app.previous.log"

# the call: a carrier number dialling the bridge, a bot that escalates to the human queue
SERVICE_NUMBER = "5551000"
CALLER_NUMBER = "15550001111"
EXPECTED_QUEUE = "agents-queue"
EXPECTED_ESCALATE_TO = "agents-queue"
REFER_USER = "escalation"
# hex of "escalate_to=agents-queue": what the bot puts in its Refer-To URI
REFER_UUI_HEX = "657363616c6174655f746f3d6167656e74732d7175657565"
REFER_HEADERS = f"?User-to-User={REFER_UUI_HEX}%3Bencoding%3Dhex"
BOT_TALK_MS = 2000  # how long the bot talks before it transfers
AGENT_TALK_MS = 3000  # how long the agent talks before hanging up (the window for ARI reads)
PARTY_IP = "127.0.0.1"  # SIPp parties bind here (Sipp.start's default local address)

# limits
QUEUE_WAIT_TIMEOUT_SECONDS = 20.0  # caller answered -> bot talks -> REFER -> Queue()
AGENT_ANSWER_TIMEOUT_SECONDS = 10.0  # caller in Queue() -> agent rung and answered
PARTY_EXIT_TIMEOUT_SECONDS = 30.0  # per SIPp party, after the ARI reads
APP_REGISTER_TIMEOUT_SECONDS = 10.0  # app process says "registered" -> ARI lists the app
POLL_SECONDS = 0.1

UUI_HEADER = "User-to-User"
ESCALATE_HEADER = "X-Escalate-To"
INTERACTION_HEADER = "X-Interaction-Id"
CALLER_CHANNEL_PREFIX = "PJSIP/carrier-"
QUEUE_APP = "Queue"
PARTIES = ("caller", "bot", "agent")
# the interaction record's fields worth showing ("context" is the decoded context_json)
RECORD_FIELDS = (
    "interaction_id",
    "state",
    "outcome",
    "queue",
    "escalate_to",
    "availability",
    "context",
    "error_reason",
)

# the caller's variables the demo shows, in the order a reader wants them
VARIABLES = (
    VAR_INTERACTION_ID,
    VAR_OUTCOME,
    VAR_QUEUE,
    VAR_ESCALATE_TO,
    VAR_CONTEXT,
    VAR_CONTEXT_KEY + "ESCALATE_TO",
    VAR_ERROR,
    VAR_UUI,
)

# "2026-11-23 23:18:58,397 INFO ari_app.calls.session: call ...": the app's log format (ari_app/cli)
_SESSION_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+) ari_app\.session: "
    r"(?P<text>.*)$"
)
_APP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"
_ORIGIN = datetime.fromtimestamp(0, UTC)

Progress = Callable[[str], None]
T = TypeVar("T")


def say(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class QueueObservation:
    """What ARI showed of the caller while the agent was talking."""

    channel_name: str = ""
    channel_id: str = ""
    app_data: str = ""
    variables: Mapping[str, str | None] = field(default_factory=dict)
    agent_answered: bool = False
    error: str | None = None

    @property
    def queue(self) -> str:
        # Queue(<name>,<options>,...): the first argument is the queue
        return self.app_data.split(",", 1)[0].strip()


@dataclass(frozen=True)
class DecodedUUI:
    """A User-to-User header value and what it says, for the reader and the checks."""

    raw: str | None
    context: uui.Context | None
    error: str | None

    def describe(self) -> str:
        if self.raw is None:
            return "(absent)"
        if self.context is None:
            return f"(not decodable: {self.error})"
        return ";".join(f"{key}={value}" for key, value in self.context.pairs)


@dataclass
class DemoResult:
    """Everything the demo learnt; ``checks`` decide the exit status."""

    interaction_id: str
    observation: QueueObservation
    checks: dict[str, bool]
    returncodes: dict[str, int | None]
    reports: dict[str, str]
    timeline: str
    contexts: dict[str, DecodedUUI]
    record: Record | None
    store_path: Path

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    @property
    def failures(self) -> list[str]:
        return [name for name, passed in self.checks.items() if not passed]

    def summary(self) -> str:
        if self.ok:
            return (
                f"DEMO OK: caller reached {self.observation.queue} with "
                f"escalate_to={self.observation.variables.get(VAR_ESCALATE_TO)} "
                f"(interaction {self.interaction_id})"
            )
        return "DEMO FAILED: " + "; ".join(self.failures)

    def render(self) -> str:
        """The account printed after the run: timeline, ARI view, context, record, checks."""
        obs = self.observation
        out = [
            "",
            self.timeline,
            "",
            "Caller in the queue (read through ARI while the agent talked)",
        ]
        if obs.error:
            out.append(f"  {obs.error}")
        if obs.channel_name:
            out.append(f"  channel    {obs.channel_name} (id {obs.channel_id})")
            out.append(f"  dialplan   {QUEUE_APP}({obs.app_data})")
            width = max(len(name) for name in VARIABLES)
            for name in VARIABLES:
                value = obs.variables.get(name)
                shown = "(unset)" if value is None else value or "(empty)"
                out.append(f"  {name:<{width}}  {shown}")
        out += ["", "Context carried on the wire (User-to-User, hex decoded)"]
        for where, decoded in self.contexts.items():
            out.append(f"  {where:<20}  {decoded.describe()}")
        out += ["", f"Interaction record ({self.store_path})"]
        if self.record is None:
            out.append(f"  no record for interaction {self.interaction_id or '(unknown)'}")
        else:
            for key in RECORD_FIELDS:
                out.append(f"  {key:<15} {self.record.get(key)}")
        out += ["", "Checks"]
        for name, passed in self.checks.items():
            out.append(f"  [{'ok' if passed else 'FAILED'}] {name}")
        return "\n".join(out)


# -- the run --------------------------------------------------------------------------------


def run_demo(stack: DevStack, progress: Progress = say) -> DemoResult:
    """Start ``stack``, place the escalating call, observe it, stop everything, report."""
    _set_aside_app_log(stack)
    parties: dict[str, SippRun] = {}
    observation = QueueObservation(error="the call was not observed")
    try:
        progress(f"starting Asterisk ({stack.runtime.describe()}) in {stack.root}...")
        stack.instance.start()
        progress(f"Asterisk up: SIP {stack.sip_remote}, ARI {stack.config.ari.url}")
        progress("starting the Stasis app...")
        stack.start_app()
        asyncio.run(_confirm_registered(stack))
        progress(f"app registered with ARI as {stack.config.ari.app!r}")
        parties = _start_parties(stack, progress)
        observation = asyncio.run(_observe_queue(stack, parties["agent"], progress))
        progress("waiting for the SIPp parties to hang up...")
        for run in parties.values():
            run.wait(PARTY_EXIT_TIMEOUT_SECONDS)
    finally:
        for run in parties.values():
            run.stop()
        progress("stopping Asterisk and the app...")
        stack.stop()
    return _result(stack, parties, observation)


def _set_aside_app_log(stack: DevStack) -> None:
    """Give this run a fresh app log, keeping the previous run's next to it.

    The app appends to one log per stack directory, and the readiness check looks for its
    "registered" line anywhere in it: a previous run's line would pass that check before this
    run's app is up, and its decisions would mix into this run's timeline.
    """
    if stack.app_log.exists():
        stack.app_log.replace(stack.app_log.with_name(PREVIOUS_APP_LOG))


async def _confirm_registered(stack: DevStack) -> None:
    """Ask ARI itself: the call must not arrive before the Stasis app exists."""
    name = stack.config.ari.app

    async def registered() -> bool:
        try:
            return any(app.get("name") == name for app in await ari.applications())
        except AriError:
            return False  # ARI not answering yet counts as not registered

    async with stack.rest() as ari:
        if not await _poll(registered, APP_REGISTER_TIMEOUT_SECONDS):
            raise StackError(
                f"ARI does not list the app {name!r} after {APP_REGISTER_TIMEOUT_SECONDS:.0f}s; "
                f"see {stack.app_log}"
            )


def _start_parties(stack: DevStack, progress: Progress) -> dict[str, SippRun]:
    """Agent and bot first (they must be listening when called), then the caller."""
    sipp = stack.sipp()
    progress(f"starting SIPp agent on {PARTY_IP}:{stack.agent_port} (talks {AGENT_TALK_MS} ms)")
    agent = sipp.start(
        "common/agent", local_port=stack.agent_port, extra=["-d", str(AGENT_TALK_MS)]
    )
    progress(
        f"starting SIPp bot on {PARTY_IP}:{stack.bot_port} "
        f"(talks {BOT_TALK_MS} ms, then REFERs to {REFER_USER} with escalate_to)"
    )
    bot = sipp.start(
        "escalate/bot",
        local_port=stack.bot_port,
        extra=["-d", str(BOT_TALK_MS)],
        keys={"refer_user": REFER_USER, "refer_headers": REFER_HEADERS},
    )
    progress(f"placing call: {CALLER_NUMBER} -> {SERVICE_NUMBER} at {stack.sip_remote}...")
    caller = sipp.start(
        "common/caller_waits",
        local_port=free_port(udp_too=True),
        remote=stack.sip_remote,
        service=SERVICE_NUMBER,
        keys={"caller_number": CALLER_NUMBER},
    )
    return {"caller": caller, "bot": bot, "agent": agent}


async def _observe_queue(stack: DevStack, agent: SippRun, progress: Progress) -> QueueObservation:
    """Wait for the caller in Queue() and the agent's answer, then read the caller's state."""
    try:
        async with stack.rest() as ari:
            queued = await _poll(lambda: _caller_in_queue(ari), QUEUE_WAIT_TIMEOUT_SECONDS)
            if queued is None:
                return QueueObservation(
                    error=f"the caller was not in {QUEUE_APP}() "
                    f"within {QUEUE_WAIT_TIMEOUT_SECONDS:.0f}s"
                )
            progress(f"caller {queued.name} is in {QUEUE_APP}({queued.dialplan.app_data})")

            async def agent_answered() -> bool:
                return _has_answered(agent)

            answered = bool(await _poll(agent_answered, AGENT_ANSWER_TIMEOUT_SECONDS))
            progress(
                "agent answered; reading the caller's channel and variables through ARI"
                if answered
                else f"agent did not answer within {AGENT_ANSWER_TIMEOUT_SECONDS:.0f}s; "
                "reading the caller's channel and variables anyway"
            )
            # read again: what counts is where the caller is while the agent talks
            current = await _caller_in_queue(ari)
            channel = current or queued
            variables = {name: await ari.get_var(channel.id, name) for name in VARIABLES}
            return QueueObservation(
                channel_name=channel.name,
                channel_id=channel.id,
                app_data=channel.dialplan.app_data or "",
                variables=variables,
                agent_answered=answered,
                error=None
                if current
                else f"the caller had left {QUEUE_APP}() by the time the agent answered",
            )
    except AriError as exc:
        return QueueObservation(error=f"ARI read failed: {exc}")


async def _caller_in_queue(ari: AriRest) -> Channel | None:
    for channel in await ari.channels():
        if (
            channel.name.startswith(CALLER_CHANNEL_PREFIX)
            and channel.dialplan.app_name == QUEUE_APP
        ):
            return channel
    return None


def _has_answered(party: SippRun) -> bool:
    return any(
        m.direction == "sent" and m.status == 200 and m.cseq_method == "INVITE"
        for m in party.messages()
    )


async def _poll(probe: Callable[[], Awaitable[T | None]], timeout: float) -> T | None:
    """``probe()`` until it returns something truthy or ``timeout`` passes (then None)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL_SECONDS)


# -- after the run --------------------------------------------------------------------------


def _result(
    stack: DevStack,
    parties: Mapping[str, SippRun],
    observation: QueueObservation,
) -> DemoResult:
    traces = {name: run.messages() for name, run in parties.items()}
    bot_invite = _first_invite(traces.get("bot", []))
    agent_invite = _first_invite(traces.get("agent", []))
    refer = next((m for m in traces.get("bot", []) if m.method == "REFER"), None)
    discriminator = stack.config.profiles["default"].uui_discriminator
    bot_iid = bot_invite.header(INTERACTION_HEADER) if bot_invite else None
    agent_iid = agent_invite.header(INTERACTION_HEADER) if agent_invite else None
    refer_to = refer.header("Refer-To") if refer else None
    contexts = {
        "bot INVITE": decode_uui(
            bot_invite.header(UUI_HEADER) if bot_invite else None, discriminator
        ),
        "bot REFER (Refer-To)": decode_refer_to_uui(refer_to, discriminator),
        # the app re-encodes the context for agents without a discriminator octet
        "agent INVITE": decode_uui(agent_invite.header(UUI_HEADER) if agent_invite else None),
    }
    agent_context = contexts["agent INVITE"].context
    returncodes = {name: run.returncode for name, run in parties.items()}
    checks = {
        f"caller reached {QUEUE_APP}({EXPECTED_QUEUE})": observation.queue == EXPECTED_QUEUE,
        f"{VAR_ESCALATE_TO} == {EXPECTED_ESCALATE_TO}": (
            observation.variables.get(VAR_ESCALATE_TO) == EXPECTED_ESCALATE_TO
        ),
        f"agent INVITE {UUI_HEADER} decodes to escalate_to={EXPECTED_ESCALATE_TO}": (
            agent_context is not None and agent_context.get("escalate_to") == EXPECTED_ESCALATE_TO
        ),
        f"agent INVITE {INTERACTION_HEADER} equals the bot's": bool(bot_iid)
        and agent_iid == bot_iid,
    }
    for name in PARTIES:
        checks[f"SIPp {name} exited 0"] = returncodes.get(name) == 0
    interaction_id = bot_iid or observation.variables.get(VAR_INTERACTION_ID) or ""
    return DemoResult(
        interaction_id=interaction_id,
        observation=observation,
        checks=checks,
        returncodes=returncodes,
        reports={name: run.report() for name, run in parties.items()},
        timeline=build_timeline(traces, session_lines(stack), discriminator),
        contexts=contexts,
        record=_record(Path(stack.config.store.path), interaction_id),
        store_path=Path(stack.config.store.path),
    )


def _first_invite(messages: list[SipMessage]) -> SipMessage | None:
    return next((m for m in messages if m.method == "INVITE" and m.direction == "received"), None)


def decode_uui(value: str | None, discriminator: bool = False) -> DecodedUUI:
    """Decode a User-to-User value (``<hex>;encoding=hex``) into its key=value context."""
    if value is None:
        return DecodedUUI(None, None, None)
    try:
        parsed = uui.parse_uui(value, discriminator=discriminator)
        return DecodedUUI(value, uui.decode_context(parsed.data), None)
    except uui.ContextError as exc:
        return DecodedUUI(value, None, exc.reason)


def decode_refer_to_uui(refer_to: str | None, discriminator: bool = False) -> DecodedUUI:
    """Decode the User-to-User value embedded in a Refer-To URI (``?User-to-User=...``)."""
    if not refer_to:
        return DecodedUUI(None, None, None)
    try:
        embedded = parse_refer_to(refer_to).user_to_user
    except uui.ContextError as exc:
        return DecodedUUI(refer_to, None, exc.reason)
    return decode_uui(embedded, discriminator)


def _record(store_path: Path, interaction_id: str) -> Record | None:
    # opening a store creates it: do not leave an empty database behind a failed run
    if not interaction_id or not store_path.exists():
        return None
    store = InteractionStore(store_path)
    try:
        return store.get(interaction_id)
    finally:
        store.close()


def session_lines(stack: DevStack) -> list[tuple[datetime | None, str]]:
    """The app's ``ari_app.calls.session`` log lines, with their times."""
    text = stack.app_log_text()
    lines: list[tuple[datetime | None, str]] = []
    for line in text.splitlines():
        match = _SESSION_LINE.match(line)
        if not match:
            continue
        level = match.group("level")
        prefix = "" if level == "INFO" else f"{level}: "
        lines.append((_app_time(match.group("at")), prefix + match.group("text")))
    return lines


def _app_time(text: str) -> datetime | None:
    try:
        # the app logs local time; astimezone() on a naive value takes it as local
        return datetime.strptime(text, _APP_TIME_FORMAT).astimezone(UTC)
    except ValueError:
        return None


def _sipp_time(text: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


# -- the timeline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    at: datetime | None
    source: str  # the party whose trace (or "app" for the app log) the event comes from
    who: str
    head: str
    details: tuple[str, ...] = ()


def build_timeline(
    traces: Mapping[str, list[SipMessage]],
    app_lines: list[tuple[datetime | None, str]],
    discriminator: bool = False,
) -> str:
    """The messages that matter from every party plus the app's decisions, in time order."""
    events: list[_Event] = []
    for party in PARTIES:
        for msg in traces.get(party, []):
            event = _sip_event(party, msg, discriminator)
            if event is not None:
                events.append(event)
    events += [_Event(at, "app", "app", text) for at, text in app_lines]
    ordered = _in_time_order(events)
    known = [_to_ms(e.at) for e in ordered if e.at is not None]
    start = min(known) if known else None
    who_width = max((len(e.who) for e in ordered), default=0)
    out = ["Timeline (UTC; +seconds from the first event)"]
    for event in ordered:
        if event.at is None or start is None:
            when = f"{'?':<12}  {'':>8}"
        else:
            at = _to_ms(event.at)
            offset = (at - start).total_seconds()
            when = f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}  {offset:+7.3f}s"
        line = f"  {when}  {event.who:<{who_width}}  "
        out.append(line + event.head)
        out += [" " * len(line) + "  " + detail for detail in event.details]
    if not events:
        out.append("  (no SIP messages or app decisions recorded)")
    return "\n".join(out)


def _to_ms(at: datetime) -> datetime:
    # shown times are milliseconds: offsets computed from the same values add up on screen
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


def _in_time_order(events: list[_Event]) -> list[_Event]:
    # an event without a readable time keeps its place after the previous one of its source
    keyed: list[tuple[datetime, int, _Event]] = []
    last: dict[str, datetime] = {}
    for index, event in enumerate(events):
        at = event.at or last.get(event.source, _ORIGIN)
        last[event.source] = at
        keyed.append((at, index, event))
    return [event for _, _, event in sorted(keyed, key=lambda item: (item[0], item[1]))]


def _sip_event(party: str, msg: SipMessage, discriminator: bool) -> _Event | None:
    """One timeline entry for a message worth showing; None for the rest (100, 180, ACK...)."""
    who = f"{party} -> asterisk" if msg.direction == "sent" else f"asterisk -> {party}"
    at = _sipp_time(msg.timestamp)
    request = msg.start_line.removesuffix(" SIP/2.0")
    method, status, cseq = msg.method, msg.status, msg.cseq_method
    details: list[str] = []
    if method == "INVITE":
        for name in (UUI_HEADER, ESCALATE_HEADER, INTERACTION_HEADER):
            value = msg.header(name)
            if value is None:
                continue
            details.append(f"{name}: {value}")
            if name == UUI_HEADER:
                # the bot's INVITE may carry the profile's discriminator octet; the agent's not
                decoded = decode_uui(value, discriminator and party == "bot")
                details.append(f"  = {decoded.describe()}")
        return _Event(at, party, who, request, tuple(details))
    if method == "REFER":
        refer_to = msg.header("Refer-To") or ""
        details.append(f"Refer-To: {refer_to}")
        embedded = decode_refer_to_uui(refer_to, discriminator)
        if embedded.raw is not None:
            details.append(f"  = {embedded.describe()}")
        return _Event(at, party, who, request, tuple(details))
    if method == "NOTIFY":
        sipfrag = msg.body.splitlines()[0].strip() if msg.body else "(no body)"
        return _Event(at, party, who, f"NOTIFY (sipfrag: {sipfrag})")
    if method == "BYE":
        return _Event(at, party, who, request)
    if status == 202 or (status == 200 and cseq in {"INVITE", "BYE"}):
        return _Event(at, party, who, f"{msg.start_line.removeprefix('SIP/2.0 ')} ({cseq})")
    return None


# -- make demo ------------------------------------------------------------------------------


def busy_ports(stack: DevStack) -> list[str]:
    """The stack's listening addresses that something else already holds."""
    sip_host = str(stack.config.sip.host)
    ari = urlsplit(stack.config.ari.url)
    wanted = [
        ("SIP", sip_host, stack.sip_port, socket.SOCK_DGRAM),
        ("SIP", sip_host, stack.sip_port, socket.SOCK_STREAM),
        ("SIP TLS", sip_host, stack.config.sip.tls_port, socket.SOCK_STREAM),
        ("ARI", ari.hostname or "127.0.0.1", ari.port or 80, socket.SOCK_STREAM),
        ("bot (SIPp)", PARTY_IP, stack.bot_port, socket.SOCK_DGRAM),
        ("agent (SIPp)", PARTY_IP, stack.agent_port, socket.SOCK_DGRAM),
    ]
    busy = []
    for label, host, port, kind in wanted:
        if not port_is_free(host, port, kind):
            proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
            busy.append(f"{label} {host}:{port}/{proto}")
    return busy


def port_is_free(host: str, port: int, kind: socket.SocketKind) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # as the servers do: a TIME_WAIT left by the previous run must not read as busy
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def main() -> int:
    say("selecting the Asterisk runtime...")
    try:
        runtime = select_runtime()
        stack = build_stack(runtime, runtime.scratch_root() / DEMO_DIR_NAME, free_ports=False)
    except (RuntimeUnavailable, StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    busy = busy_ports(stack)
    if busy:
        print(
            f"error: the demo needs the default ports, but these are in use: {', '.join(busy)}.\n"
            "If `make up` is running, stop it with `make down` and run `make demo` again.",
            file=sys.stderr,
        )
        return 1
    try:
        result = run_demo(stack)
    except (RuntimeUnavailable, StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.render())
    if not result.ok:
        print("\nWhat failed:")
        for name in result.failures:
            print(f"  - {name}")
        if result.observation.error:
            print(f"  ({result.observation.error})")
        for name in PARTIES:
            if name in result.reports:
                print(f"\n{result.reports[name]}")
        print(f"\napp log: {stack.app_log}")
    print()
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
