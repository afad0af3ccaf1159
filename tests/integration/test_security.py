"""Security controls of the bridge, proven on a real Asterisk 22 with SIPp parties.

Every test asserts on what crossed the wire (the SIPp traces) and on what Asterisk did (ARI:
channels, bridges, variables, and a ``subscribeAll`` observer that sees every channel Asterisk
creates). docs/security.md maps each threat to the test here that proves its control.

Four stacks are used: the shared default one (plain UDP, no SRTP, as ``make up`` runs it); a
"strict" one whose carrier allow-list pins a source port and whose bot has an address of its
own (127.0.0.2); a "secure" one with HTTPS ARI, SIP over TLS with the bot's certificate
verified, and SRTP required on both legs; and one with SRTP optional on both legs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import ssl
import stat
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from ari_app.ari import AriRest, Channel, Event, EventStream
from ari_app.asterisk import make_self_signed
from devtools.certs import DevCerts, ensure_dev_certs, names_in
from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime
from devtools.sipp import SipMessage, SippRun
from devtools.stack import free_port
from tests.harness import first, queued_caller, until

pytestmark = pytest.mark.integration

EXTERNAL_NUMBER = "+442071234567"
CALL_TIMEOUT = 40
STRANGER_IP = "127.0.0.2"
SRTP_KEY_BYTES = 30  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt
CRYPTO_LINE = re.compile(r"^a=crypto:(\d+) AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)")
AUDIO_LINE = re.compile(r"^m=audio \d+ (\S+) ", re.MULTILINE)
# the only channels a call may ever have: caller, bot, the Local pair a bot REFER creates, and
# the queue member
ALLOWED_CHANNEL = re.compile(
    r"^(PJSIP/(carrier|voicebot|agent1)-[0-9a-f]{8}"
    r"|Local/[^@/]+@botbridge-transfer-[0-9a-f]{8};[12])$"
)


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class ChannelWatch:
    """Every channel that exists while it runs, seen two ways.

    ``polled``: names from ``GET /channels`` every 50 ms. ``observed``: names from a
    ``subscribeAll`` event stream, which also sees channels too short-lived for polling;
    ``dialstrings``: every Dial event's dial string (what Asterisk tried to call).
    """

    ari: AriRest
    stream: EventStream
    polled: set[str] = field(default_factory=set)
    observed: set[str] = field(default_factory=set)
    dialstrings: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return self.polled | self.observed

    def unexpected(self) -> set[str]:
        return {n for n in self.names if not ALLOWED_CHANNEL.match(n)}

    def on_event(self, event: Event) -> None:
        for channel in (event.channel, event.peer, event.caller, event.replace_channel):
            if channel is not None:
                self.observed.add(channel.name)
        if event.type == "Dial" and event.dialstring:
            self.dialstrings.append(event.dialstring)

    async def poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.polled.update(c.name for c in await self.ari.channels())
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def watch_channels(
    stack: DevStack, ari: AriRest, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[ChannelWatch]:
    stream = EventStream(
        stack.config.ari.url,
        stack.config.ari.username,
        stack.config.ari_password,
        f"observer-{uuid.uuid4().hex[:8]}",
        subscribe_all=True,
        ssl=ssl_context,
    )
    watch = ChannelWatch(ari, stream)
    runner = asyncio.create_task(stream.run(watch.on_event))
    poller = asyncio.create_task(watch.poll())
    try:
        await until(lambda: stream.connected, 10, "the observer's event stream")
        yield watch
    finally:
        stream.stop()
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await asyncio.wait_for(runner, 10)


def received(run: SippRun, *, status: int | None = None, cseq: str | None = None) -> bool:
    return any(
        m.direction == "received"
        and (status is None or m.status == status)
        and (cseq is None or m.cseq_method == cseq)
        for m in run.messages()
    )


async def bridged_pair(ari: AriRest) -> tuple[Channel, Channel] | None:
    """The caller and the bot in one bridge, or None."""
    channels = {c.id: c for c in await ari.channels()}
    for bridge in await ari.bridges():
        members = [channels[cid] for cid in bridge.channels if cid in channels]
        caller = [c for c in members if c.name.startswith("PJSIP/carrier-")]
        bot = [c for c in members if c.name.startswith("PJSIP/voicebot-")]
        if len(members) == 2 and caller and bot:
            return caller[0], bot[0]
    return None


async def assert_nothing_left(ari: AriRest) -> None:
    async def empty() -> bool:
        return not await ari.channels() and not await ari.bridges()

    await until(empty, 20, "no channels and no bridges left in Asterisk")


def wait_all(*runs: SippRun) -> str:
    for run in runs:
        run.wait(CALL_TIMEOUT)
    return "\n".join(run.report() for run in runs)


def sdp_crypto(message: SipMessage) -> tuple[str, list[tuple[str, bytes]]]:
    """The audio transport profile and the (tag, decoded key) of each AES_CM_128_HMAC_SHA1_80
    crypto attribute in a message's SDP."""
    profile = AUDIO_LINE.search(message.body)
    cryptos = []
    for line in message.body.splitlines():
        match = CRYPTO_LINE.match(line.strip())
        if match:
            key_params = match.group(2).split("|", 1)[0]
            cryptos.append((match.group(1), base64.b64decode(key_params)))
    return (profile.group(1) if profile else ""), cryptos


def dialled_endpoints(dialstrings: list[str]) -> set[str]:
    """PJSIP endpoints named by Dial events: ``voicebot/sip:...`` (ARI dial), ``PJSIP/agent1``
    (Queue)."""
    return {d.removeprefix("PJSIP/").split("/", 1)[0] for d in dialstrings}


def random_srtp_key() -> str:
    return base64.b64encode(os.urandom(SRTP_KEY_BYTES)).decode()


def start_stack(runtime: Runtime, name: str, extra_env: dict[str, str]) -> DevStack:
    root = runtime.scratch_root() / f"test-security-{name}-{uuid.uuid4().hex[:8]}"
    return started(build_stack(runtime, root, free_ports=True, extra_env=extra_env))


def started(stack: DevStack) -> DevStack:
    """Start Asterisk and the app; if the app does not come up, stop Asterisk again."""
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def write_config(root: Path, text: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "botbridge.toml"
    path.write_text(text)
    return str(path)


# -- 1. a REFER from the carrier side --------------------------------------------------------------


async def test_carrier_refer_is_refused_with_603_and_the_call_goes_on(stack: DevStack) -> None:
    """The carrier endpoint has allow_transfer=no: its REFER (to an international number) is
    answered 603 on the wire, no transfer channel appears, and caller and bot stay bridged
    until the caller hangs up normally (its BYE gets 200: the dialog was still up)."""
    sipp = stack.sipp()
    async with stack.rest() as ari, watch_channels(stack, ari) as watch:
        bot = sipp.start("carrier_refer/bot", local_port=stack.bot_port)
        caller = sipp.start(
            "carrier_refer/caller",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={
                "caller_number": "15550003333",
                "refer_to": f"<sip:{EXTERNAL_NUMBER}@evil.example.com>",
            },
            extra=["-d", "3000"],
        )
        await until(lambda: received(caller, status=603, cseq="REFER"), 20, "the REFER's 603")
        still_bridged = await bridged_pair(ari)
        caller_state = still_bridged[0].state if still_bridged else None
        report = wait_all(caller, bot)
        await assert_nothing_left(ari)
    assert caller.returncode == 0 and bot.returncode == 0, report
    refusal = first(caller, status=603, direction="received")
    assert refusal.cseq_method == "REFER", report
    assert not any(m.status == 202 for m in caller.messages()), report
    # after the refusal the call went on: caller and bot still in one bridge, caller Up ...
    assert still_bridged is not None, f"caller and bot not bridged after the 603\n{report}"
    assert caller_state == "Up"
    # ... and the caller's own hang-up ended it: its BYE answered 200, the bot released
    assert first(caller, status=200, cseq="BYE", direction="received")
    assert first(bot, method="BYE", direction="received")
    assert not any(n.startswith("Local/") for n in watch.names), watch.names
    assert {n.split("-")[0] for n in watch.names} == {"PJSIP/carrier", "PJSIP/voicebot"}
    assert not [d for d in watch.dialstrings if EXTERNAL_NUMBER[1:] in d], watch.dialstrings


# -- 2. toll fraud through the bot's REFER ---------------------------------------------------------


@pytest.mark.parametrize(
    "refer_to",
    [
        pytest.param(f"<sip:{EXTERNAL_NUMBER}@evil.example.com>", id="sip-external-host"),
        pytest.param(
            f"<sip:0044{EXTERNAL_NUMBER[3:]}@evil.example.com;user=phone>", id="user-phone"
        ),
    ],
)
async def test_bot_refer_to_an_external_number_dials_nothing_but_the_queue(
    stack: DevStack, refer_to: str
) -> None:
    """Asterisk accepts the bot's REFER (202: the bot may transfer), but the only thing that
    happens is what the app decides from its routing map: the caller goes to the profile's
    default queue with BOTBRIDGE_ERROR=context_missing, the agent is the only party dialled,
    and no channel other than caller, bot, the Local transfer pair and agent ever exists."""
    sipp = stack.sipp()
    async with stack.rest() as ari, watch_channels(stack, ari) as watch:
        agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "1500"])
        bot = sipp.start(
            "toll_fraud/bot_accepted",
            local_port=stack.bot_port,
            keys={"refer_to": refer_to},
            extra=["-d", "1500"],
        )
        caller = sipp.start(
            "common/caller_waits",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550004444"},
        )
        queued = await until(lambda: queued_caller(ari), 25, "the caller in Queue()")
        variables = {
            name: await ari.get_var(queued.id, f"BOTBRIDGE_{name}")
            for name in ("QUEUE", "ERROR", "ESCALATE_TO", "OUTCOME")
        }
        report = wait_all(caller, bot, agent)
        await assert_nothing_left(ari)
    for run in (caller, bot, agent):
        assert run.returncode == 0, report
    assert first(bot, status=202, direction="received").cseq_method == "REFER"
    assert "agents-queue" in (queued.dialplan.app_data or "")
    assert variables["QUEUE"] == "agents-queue"
    assert variables["ERROR"] == "context_missing"
    assert variables["OUTCOME"] == "escalated"
    assert not variables["ESCALATE_TO"]
    # the agent is the one party that was dialled, and nothing named the external number
    invite = first(agent, method="INVITE", direction="received")
    assert invite.start_line.startswith("INVITE sip:agent1@"), invite.start_line
    assert watch.unexpected() == set(), watch.names
    # Asterisk did turn the Refer-To user into Local/<user>@botbridge-transfer, which only
    # answers and waits; the app read the REFER there and chose the queue from its map
    refer_user = re.search(r"sip:([^@]+)@", refer_to)
    assert refer_user is not None
    local = f"Local/{refer_user.group(1)}@botbridge-transfer-"
    assert any(n.startswith(local) for n in watch.names), watch.names
    assert any(n.startswith("PJSIP/agent1-") for n in watch.names)
    assert dialled_endpoints(watch.dialstrings) == {"voicebot", "agent1"}, watch.dialstrings
    assert not [d for d in watch.dialstrings if "evil" in d or "2071234567" in d]


@pytest.mark.parametrize(
    "refer_to",
    [
        pytest.param(f"<tel:{EXTERNAL_NUMBER}>", id="tel-uri"),
        pytest.param(EXTERNAL_NUMBER, id="bare-number"),
    ],
)
async def test_bot_refer_to_a_non_sip_target_is_refused_before_any_dialplan(
    stack: DevStack, refer_to: str
) -> None:
    """A Refer-To that is no SIP URI (tel:, a bare number) is refused by Asterisk with 400:
    no transfer channel, nothing dialled, and the caller stays with the bot until it hangs
    up."""
    sipp = stack.sipp()
    async with stack.rest() as ari, watch_channels(stack, ari) as watch:
        bot = sipp.start(
            "toll_fraud/bot_refused",
            local_port=stack.bot_port,
            keys={"refer_to": refer_to},
            extra=["-d", "1000"],
        )
        caller = sipp.start(
            "common/caller_hangs_up",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550005555"},
            extra=["-d", "4000"],
        )
        await until(lambda: received(bot, status=400, cseq="REFER"), 20, "the REFER's 400")
        still_bridged = await bridged_pair(ari)
        report = wait_all(caller, bot)
        await assert_nothing_left(ari)
    assert caller.returncode == 0 and bot.returncode == 0, report
    assert still_bridged is not None, f"caller and bot not bridged after the 400\n{report}"
    assert first(bot, method="BYE", direction="received")  # released when the caller left
    assert {n.split("-")[0] for n in watch.names} == {"PJSIP/carrier", "PJSIP/voicebot"}
    assert dialled_endpoints(watch.dialstrings) == {"voicebot"}, watch.dialstrings


# -- 3. allow-lists: who may talk to the bridge ----------------------------------------------------


@pytest.mark.parametrize("from_user", ["15550006666", "carrier", "voicebot", "agent1"])
async def test_call_from_an_unlisted_address_is_refused_and_creates_nothing(
    stack: DevStack, from_user: str
) -> None:
    """Carrier, bot and agent allow-lists are 127.0.0.1: an INVITE from 127.0.0.2 is refused
    403 by the signalling ACL before any endpoint is looked at, and creates no channel, whatever
    its From user names. (Behind the ACL, every endpoint also has identify_by = ip: with
    Asterisk's default, username,ip, From "carrier" from anywhere was taken for the carrier.)"""
    sipp = stack.sipp()
    async with stack.rest() as ari, watch_channels(stack, ari) as watch:
        stranger = sipp.start(
            "allow_list/refused",
            local_port=free_port(STRANGER_IP, udp_too=True),
            local_ip=STRANGER_IP,
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": from_user},
        )
        report = wait_all(stranger)
        await asyncio.sleep(0.5)  # anything the INVITE started would show up by now
        left = await ari.channels()
    assert stranger.returncode == 0, report
    answer = first(stranger, status=403, direction="received")
    assert answer.cseq_method == "INVITE"
    assert not any(m.status in {100, 180, 183, 200} for m in stranger.messages()), report
    assert watch.names == set() and left == [], watch.names


async def test_forged_in_dialog_refer_from_an_unlisted_address_is_refused(
    stack: DevStack,
) -> None:
    """A REFER carrying a live bot dialog's Call-ID and tags, sent from 127.0.0.2 (on no
    allow-list), is refused 403 by the signalling ACL: no transfer happens, caller and bot
    stay bridged. Dialog identifiers alone do not let anyone else act as the bot."""
    sipp = stack.sipp()
    async with stack.rest() as ari, watch_channels(stack, ari) as watch:
        bot = sipp.start("caller_abandons/bot", local_port=stack.bot_port)
        caller = sipp.start(
            "common/caller_hangs_up",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550007777"},
            extra=["-d", "5000"],
        )
        await until(lambda: bridged_pair(ari), 15, "caller and bot bridged")
        invite = first(bot, method="INVITE", direction="received")
        answer = first(bot, status=200, cseq="INVITE", direction="sent")
        bot_tag = (answer.header("To") or "").split("tag=", 1)[1]
        forger = sipp.start(
            "allow_list/forged_refer",
            local_port=free_port(STRANGER_IP, udp_too=True),
            local_ip=STRANGER_IP,
            remote=stack.sip_remote,
            keys={"bot_tag": bot_tag, "asterisk_party": invite.header("From") or ""},
            # SIPp maps responses to its call by Call-ID: make its call the bot's dialog
            extra=["-cid_str", invite.header("Call-ID") or ""],
        )
        forger.wait(15)
        still_bridged = await bridged_pair(ari)
        report = wait_all(caller, bot)
    assert forger.returncode == 0, forger.report()
    assert first(forger, status=403, direction="received").cseq_method == "REFER"
    assert still_bridged is not None, report
    assert not any(name.startswith("Local/") for name in watch.names), watch.names
    assert first(bot, method="BYE", direction="received")  # released when the caller left


async def test_call_from_a_listed_address_is_accepted(stack: DevStack) -> None:
    """The same call from 127.0.0.1 (on the allow-list) is answered and bridged to the bot."""
    sipp = stack.sipp()
    async with stack.rest() as ari:
        bot = sipp.start("carrier_refer/bot", local_port=stack.bot_port)
        caller = sipp.start(
            "common/caller_hangs_up",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550007777"},
            extra=["-d", "2000"],
        )
        pair = await until(lambda: bridged_pair(ari), 15, "caller and bot bridged")
        report = wait_all(caller, bot)
        await assert_nothing_left(ari)
    assert caller.returncode == 0 and bot.returncode == 0, report
    assert first(caller, status=200, cseq="INVITE", direction="received")
    assert pair[0].name.startswith("PJSIP/carrier-")


@pytest.fixture(scope="module")
def strict_stack(runtime: Runtime) -> Iterator[tuple[DevStack, int]]:
    """Carrier allow-list pinned to one source port (identify match address:port), and the
    bot at 127.0.0.2, an address of its own as it would have in production."""
    carrier_port = free_port(udp_too=True)
    bot_port = free_port(STRANGER_IP, udp_too=True)
    stack = start_stack(
        runtime,
        "strict",
        {
            "BOTBRIDGE_CARRIER_MATCH": f"127.0.0.1:{carrier_port}",
            "BOTBRIDGE_BOT_URI": f"sip:voicebot@{STRANGER_IP}:{bot_port}",
            "BOTBRIDGE_BOT_MATCH": STRANGER_IP,
        },
    )
    stack.bot_port = bot_port
    try:
        yield stack, carrier_port
    finally:
        stack.stop()


async def test_carrier_allow_list_can_pin_the_source_port(
    strict_stack: tuple[DevStack, int],
) -> None:
    """Asterisk 22's identify `match` accepts address:port. With carrier_match
    127.0.0.1:<port>, a call from 127.0.0.1 on another port is challenged (401) like a
    stranger's, and the call from the pinned port is accepted and bridged to the bot."""
    stack, carrier_port = strict_stack
    sipp = stack.sipp()
    rendered = (stack.root / "etc" / "pjsip.conf").read_text()
    assert f"match = 127.0.0.1:{carrier_port}" in rendered
    async with stack.rest() as ari:
        other = sipp.start(
            "allow_list/stranger",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550008888"},
        )
        other_report = wait_all(other)
        assert not await ari.channels()
        bot = sipp.start("carrier_refer/bot", local_port=stack.bot_port, local_ip=STRANGER_IP)
        caller = sipp.start(
            "common/caller_hangs_up",
            local_port=carrier_port,
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550009999"},
            extra=["-d", "1500"],
        )
        await until(lambda: bridged_pair(ari), 15, "caller and bot bridged")
        report = wait_all(caller, bot)
        await assert_nothing_left(ari)
    assert other.returncode == 0, other_report
    assert first(other, status=401, direction="received").cseq_method == "INVITE"
    assert caller.returncode == 0 and bot.returncode == 0, report
    assert first(caller, status=200, cseq="INVITE", direction="received")


async def test_the_bot_cannot_originate_calls(strict_stack: tuple[DevStack, int]) -> None:
    """The bot endpoint has no identify section: an INVITE from the bot's own address and
    port (127.0.0.2, where the bridge calls it) is challenged 401 like any stranger's and
    creates no channel. The bot can only answer calls the bridge places to it."""
    stack, _ = strict_stack
    sipp = stack.sipp()
    async with stack.rest() as ari, watch_channels(stack, ari) as watch:
        bot_calls = sipp.start(
            "allow_list/stranger",
            local_port=stack.bot_port,
            local_ip=STRANGER_IP,
            remote=stack.sip_remote,
            service="escalation",
            keys={"caller_number": "voicebot"},
        )
        report = wait_all(bot_calls)
        await asyncio.sleep(0.5)
        left = await ari.channels()
    assert bot_calls.returncode == 0, report
    assert first(bot_calls, status=401, direction="received").cseq_method == "INVITE"
    assert watch.names == set() and left == [], watch.names


# -- 4. ARI: loopback only, secrets kept -----------------------------------------------------------


async def test_ari_listens_on_loopback_only_and_keeps_its_secret(stack: DevStack) -> None:
    """http.conf binds ARI to the address of ari.url (127.0.0.1 by default): the port does not
    answer on another address. The password lives only in ari.conf (mode 0600) and never
    shows up in the app's log or the SIP traffic."""
    host, port = "127.0.0.1", int(stack.config.ari.url.rsplit(":", 1)[1].split("/", 1)[0])
    with socket.create_connection((host, port), timeout=2):
        pass
    with pytest.raises(OSError), socket.create_connection((STRANGER_IP, port), timeout=2):
        pass
    async with stack.rest() as ari:
        assert (await ari.asterisk_info())["system"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.config.ari.url}/asterisk/info") as reply,
    ):
        assert reply.status == 401  # no credentials, no answer
        assert "Server" not in reply.headers  # servername is blank: no version banner
    ari_conf = stack.root / "etc" / "ari.conf"
    assert stat.S_IMODE(ari_conf.stat().st_mode) == 0o600
    password = stack.config.ari_password
    assert password in ari_conf.read_text()
    assert password not in stack.app_log_text()
    for trace in (stack.root / "sipp").glob("*/*_messages.log"):
        assert password not in trace.read_text(errors="replace")


# -- 4 and 5. HTTPS ARI, SIP over TLS, SRTP required -----------------------------------------------


@dataclass
class SecureStack:
    stack: DevStack
    certs: DevCerts
    bot_port: int

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca_cert))

    def rest(self) -> AriRest:
        config = self.stack.config
        return AriRest(
            config.ari.url, config.ari.username, config.ari_password, ssl=self.ssl_context()
        )

    @property
    def tls_remote(self) -> str:
        return f"{self.stack.config.sip.host}:{self.stack.config.sip.tls_port}"

    def tls_args(self) -> list[str]:
        rp = self.stack.runtime.runtime_path
        return ["-tls_cert", rp(self.certs.server_cert), "-tls_key", rp(self.certs.server_key)]


@pytest.fixture(scope="module")
def secure_stack(runtime: Runtime) -> Iterator[SecureStack]:
    """HTTPS-only ARI on a free port, development certificates from devtools.certs, the carrier
    and the bot both required to use SRTP, and the bot reached over TLS (its URI says so)
    with its certificate verified against the dev CA (sip.tls_verify_server)."""
    root = runtime.scratch_root() / f"test-security-secure-{uuid.uuid4().hex[:8]}"
    # build_stack uses <root>/state as the state directory: the dev CA goes to <root>/state/tls
    certs, _ = ensure_dev_certs(root / "state" / "tls")
    bot_port = free_port()
    config = write_config(
        root,
        """
[ari]
ca_file = "tls/ca.crt"

[sip]
tls_ca_file = "tls/ca.crt"
tls_verify_server = true
carrier_media_encryption = "sdes"
carrier_media_encryption_optimistic = false
bot_media_encryption = "sdes"
bot_media_encryption_optimistic = false
""",
    )
    stack = build_stack(
        runtime,
        root,
        free_ports=True,
        extra_env={
            "BOTBRIDGE_CONFIG": config,
            "BOTBRIDGE_ARI_URL": f"https://127.0.0.1:{free_port()}/ari",
            "BOTBRIDGE_BOT_URI": f"sip:voicebot@127.0.0.1:{bot_port};transport=tls",
        },
    )
    started(stack)
    try:
        yield SecureStack(stack, certs, bot_port)
    finally:
        stack.stop()


async def test_ari_over_tls_with_the_dev_ca(secure_stack: SecureStack) -> None:
    """With an https:// ari.url Asterisk serves ARI over TLS only: the app registered over
    wss:// verifying the certificate against ari.ca_file, an AriRest with the dev CA is
    answered, a client that does not trust the CA is refused at the handshake, and plain
    HTTP on the port gets no answer."""
    stack = secure_stack.stack
    assert stack.config.ari.url.startswith("https://")
    log = stack.app_log_text()
    assert re.search(r"connected to wss://127\.0\.0\.1:\d+/ari/events.*registered", log), log
    async with secure_stack.rest() as ari:
        info = await ari.asterisk_info()
        assert info["system"]
        apps = [a["name"] for a in await ari.applications()]
    assert stack.config.ari.app in apps
    http_conf = (stack.root / "etc" / "http.conf").read_text()
    assert "enabled = no" in http_conf and "tlsenable = yes" in http_conf
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{stack.config.ari.url}/asterisk/info")  # system trust store
        plain = stack.config.ari.url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"{plain}/asterisk/info", timeout=aiohttp.ClientTimeout(total=3))


async def test_tls_call_negotiates_srtp_on_both_legs(secure_stack: SecureStack) -> None:
    """A carrier call over TLS offering only SRTP (RTP/SAVP, one SDES AES_CM_128_HMAC_SHA1_80
    key) is bridged to a bot reached over TLS, also with SRTP.

    Proven (from the SIPp traces): both signalling legs ran over TLS (Via SIP/2.0/TLS on
    every message, including the BYE Asterisk sends the caller); the caller's 200 OK answers
    RTP/SAVP with one crypto attribute under the offered tag carrying a 30-byte key of
    Asterisk's own; Asterisk's INVITE to the bot offers RTP/SAVP with AES_CM_128_HMAC_SHA1_80
    and the bot's RTP/SAVP answer was accepted (the call was bridged). The bot's certificate
    chains to the dev CA and Asterisk verified it (sip.tls_verify_server; the next test shows
    an untrusted one is refused). From ARI: both channels report CHANNEL(rtp,secure)=1
    (Asterisk set up SRTP with the negotiated keys on each leg) and CHANNEL(pjsip,secure)=1.

    Not proven: that media is actually encrypted on the wire or decrypts correctly. SIPp
    neither sends nor decrypts SRTP here (no media is exchanged). Nor that the carrier is who
    it claims: Asterisk does not ask the carrier for a client certificate; the carrier is
    identified by its address (allow-list) only.
    """
    secure = secure_stack
    stack = secure.stack
    sipp = stack.sipp()
    caller_key, bot_key = random_srtp_key(), random_srtp_key()
    async with secure.rest() as ari:
        bot = sipp.start(
            "tls_srtp/bot",
            local_port=secure.bot_port,
            transport="l1",
            keys={"crypto_key": bot_key},
            extra=[*secure.tls_args(), "-d", "2500"],
        )
        caller = sipp.start(
            "tls_srtp/caller",
            local_port=free_port(),
            remote=secure.tls_remote,
            transport="l1",
            service="5551000",
            keys={"caller_number": "15550002323", "crypto_key": caller_key},
            extra=secure.tls_args(),
        )
        pair = await until(lambda: bridged_pair(ari), 15, "caller and bot bridged")
        secure_flags = {
            channel.name.split("-")[0]: (
                await ari.get_var(channel.id, "CHANNEL(rtp,secure)"),
                await ari.get_var(channel.id, "CHANNEL(pjsip,secure)"),
            )
            for channel in pair
        }
        report = wait_all(caller, bot)
        await assert_nothing_left(ari)
    assert caller.returncode == 0 and bot.returncode == 0, report
    for run in (caller, bot):
        for message in run.messages():
            assert (message.header("Via") or "").startswith("SIP/2.0/TLS"), message.describe()
    assert first(caller, method="BYE", direction="received")

    offer_to_bot = first(bot, method="INVITE", direction="received")
    profile, cryptos = sdp_crypto(offer_to_bot)
    assert profile == "RTP/SAVP", offer_to_bot.body
    assert cryptos and all(len(key) == SRTP_KEY_BYTES for _, key in cryptos), offer_to_bot.body
    bot_answer = first(bot, status=200, cseq="INVITE", direction="sent")
    assert sdp_crypto(bot_answer) == ("RTP/SAVP", [(cryptos[0][0], base64.b64decode(bot_key))])

    answer_to_caller = first(caller, status=200, cseq="INVITE", direction="received")
    profile, cryptos = sdp_crypto(answer_to_caller)
    assert profile == "RTP/SAVP", answer_to_caller.body
    assert [tag for tag, _ in cryptos] == ["1"], answer_to_caller.body
    assert len(cryptos[0][1]) == SRTP_KEY_BYTES
    assert cryptos[0][1] != base64.b64decode(caller_key)  # Asterisk's own key, not an echo

    assert secure_flags == {"PJSIP/carrier": ("1", "1"), "PJSIP/voicebot": ("1", "1")}


async def test_bot_with_an_untrusted_certificate_gets_no_call(secure_stack: SecureStack) -> None:
    """A "bot" at the configured address whose TLS certificate does not chain to
    sip.tls_ca_file (a self-signed one for 127.0.0.1) never receives the INVITE: Asterisk
    ends the handshake, the app counts the bot as failed, and the caller (still on SRTP)
    reaches the fallback queue's agent instead."""
    secure = secure_stack
    stack = secure.stack
    untrusted = stack.root / "untrusted"
    untrusted.mkdir(exist_ok=True)
    make_self_signed(untrusted / "bot.crt", untrusted / "bot.key")
    rp = stack.runtime.runtime_path
    sipp = stack.sipp()
    async with secure.rest() as ari:
        agent = sipp.start("common/agent", local_port=stack.agent_port, extra=["-d", "1500"])
        bot = sipp.start(
            "tls_srtp/bot",
            local_port=secure.bot_port,
            transport="l1",
            keys={"crypto_key": random_srtp_key()},
            extra=["-tls_cert", rp(untrusted / "bot.crt"), "-tls_key", rp(untrusted / "bot.key")],
        )
        caller = sipp.start(
            "tls_srtp/caller",
            local_port=free_port(),
            remote=secure.tls_remote,
            transport="l1",
            service="5551000",
            keys={"caller_number": "15550005656", "crypto_key": random_srtp_key()},
            extra=secure.tls_args(),
        )
        queued = await until(lambda: queued_caller(ari), 25, "the caller in Queue()")
        outcome = await ari.get_var(queued.id, "BOTBRIDGE_OUTCOME")
        report = wait_all(caller, agent)
        bot.stop()
        await assert_nothing_left(ari)
    assert caller.returncode == 0 and agent.returncode == 0, report + bot.report()
    assert bot.messages() == [], bot.report()
    assert outcome == "bot_failed"
    assert "The certificate is untrusted" in stack.instance.messages_log.read_text(errors="replace")
    assert "agents-queue" in (queued.dialplan.app_data or "")
    assert first(agent, method="INVITE", direction="received")
    profile, cryptos = sdp_crypto(first(caller, status=200, cseq="INVITE", direction="received"))
    assert profile == "RTP/SAVP" and cryptos


async def test_plain_rtp_offer_is_refused_where_srtp_is_required(
    secure_stack: SecureStack,
) -> None:
    """carrier_media_encryption = sdes, optimistic = false: an offer of plain RTP/AVP (over
    TLS) is answered 488 Not Acceptable Here, and no channel is created for it."""
    secure = secure_stack
    stack = secure.stack
    sipp = stack.sipp()
    async with secure.rest() as ari, watch_channels(stack, ari, secure.ssl_context()) as watch:
        caller = sipp.start(
            "tls_srtp/caller_plain",
            local_port=free_port(),
            remote=secure.tls_remote,
            transport="l1",
            service="5551000",
            keys={"caller_number": "15550003434"},
            extra=secure.tls_args(),
        )
        report = wait_all(caller)
        await asyncio.sleep(0.5)
        left = await ari.channels()
    assert caller.returncode == 0, report
    assert first(caller, status=488, direction="received").cseq_method == "INVITE"
    assert not any(m.status == 200 for m in caller.messages()), report
    assert left == []
    assert not [n for n in watch.names if n.startswith("PJSIP/voicebot")], watch.names


# -- 5. SRTP optional on a trunk -------------------------------------------------------------------


@pytest.fixture(scope="module")
def optional_srtp_stack(runtime: Runtime) -> Iterator[DevStack]:
    """SRTP optional (sdes, optimistic) on both trunks, plain UDP signalling."""
    root = runtime.scratch_root() / f"test-security-optional-{uuid.uuid4().hex[:8]}"
    config = write_config(
        root,
        """
[sip]
carrier_media_encryption = "sdes"
carrier_media_encryption_optimistic = true
bot_media_encryption = "sdes"
bot_media_encryption_optimistic = true
""",
    )
    stack = started(
        build_stack(runtime, root, free_ports=True, extra_env={"BOTBRIDGE_CONFIG": config})
    )
    try:
        yield stack
    finally:
        stack.stop()


async def test_optional_srtp_accepts_plain_rtp(optional_srtp_stack: DevStack) -> None:
    """The per-trunk choice: with media_encryption_optimistic = yes the same plain RTP/AVP
    offer that a required trunk refuses (488) is answered 200 with plain RTP/AVP; towards the
    bot Asterisk offers RTP/AVP plus a crypto attribute (optimistic SRTP) and accepts the
    bot's plain answer. ARI confirms both legs run unencrypted (CHANNEL(rtp,secure)=0).
    Over UDP the offered keys travel in clear text: optional SRTP is a migration setting,
    not a protection (docs/security.md)."""
    stack = optional_srtp_stack
    sipp = stack.sipp()
    async with stack.rest() as ari:
        bot = sipp.start("carrier_refer/bot", local_port=stack.bot_port)
        caller = sipp.start(
            "common/caller_hangs_up",
            local_port=free_port(udp_too=True),
            remote=stack.sip_remote,
            service="5551000",
            keys={"caller_number": "15550004545"},
            extra=["-d", "2000"],
        )
        pair = await until(lambda: bridged_pair(ari), 15, "caller and bot bridged")
        secure = [await ari.get_var(c.id, "CHANNEL(rtp,secure)") for c in pair]
        report = wait_all(caller, bot)
        await assert_nothing_left(ari)
    assert caller.returncode == 0 and bot.returncode == 0, report
    assert sdp_crypto(first(caller, status=200, cseq="INVITE", direction="received")) == (
        "RTP/AVP",
        [],
    )
    profile, cryptos = sdp_crypto(first(bot, method="INVITE", direction="received"))
    assert profile == "RTP/AVP" and cryptos, report
    assert secure == ["0", "0"]


# -- development certificates (make certs) ---------------------------------------------------------


def test_dev_certs_are_made_once_and_chain_to_their_ca(tmp_path: Path) -> None:
    """``python -m devtools.certs DIR`` (make certs): a CA, a server certificate for
    127.0.0.1/::1/localhost and a client certificate, both issued by it (in-process, no
    external program); a mutual-TLS handshake with them succeeds; private keys 0600; a second
    run changes nothing; a lost CA key brings a new CA and new certificates."""
    certs, changed = ensure_dev_certs(tmp_path / "tls")
    assert changed
    before = {p.name: p.read_bytes() for p in certs.directory.iterdir()}
    assert set(before) == {
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    }
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    for issued in (certs.server_cert, certs.client_cert):
        x509.load_pem_x509_certificate(issued.read_bytes()).verify_directly_issued_by(ca)
    assert {"127.0.0.1", "::1", "localhost"} <= names_in(certs.server_cert)
    _mutual_tls_handshake(certs)

    again, changed = ensure_dev_certs(tmp_path / "tls")
    assert not changed
    assert {p.name: p.read_bytes() for p in again.directory.iterdir()} == before

    certs.ca_key.unlink()
    _, changed = ensure_dev_certs(tmp_path / "tls")
    assert changed
    assert certs.ca_cert.read_bytes() != before["ca.crt"]
    assert certs.server_cert.read_bytes() != before["server.crt"]
    assert certs.client_cert.read_bytes() != before["client.crt"]


def _mutual_tls_handshake(certs: DevCerts) -> None:
    """A TLS server requiring a client certificate from the dev CA, and a client checking the
    server's name (127.0.0.1) against it: both sides complete the handshake."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs.ca_cert)
    server_context.load_cert_chain(certs.server_cert, certs.server_key)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.create_default_context(cafile=certs.ca_cert)
    client_context.load_cert_chain(certs.client_cert, certs.client_key)
    left, right = socket.socketpair()
    peer: dict[str, Any] = {}

    def serve() -> None:
        with server_context.wrap_socket(left, server_side=True) as tls:
            peer.update(tls.getpeercert() or {})
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(right, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=10)
    assert dict(x[0] for x in peer["subject"])["commonName"] == "botbridge development client"
