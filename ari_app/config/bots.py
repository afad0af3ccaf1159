"""The bot sections: ``[profiles.<name>]`` with their bots, ``[[routes]]``, ``[routing]`` and
``[bot_health]`` (docs/configuration.md, "Several bots").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ari_app.config.headers import (
    CONTEXT_KEYS,
    VERSTAT_VERDICTS,
    check_bot_headers,
    check_profile_headers,
)
from ari_app.config.values import (
    CODECS,
    CONTEXT_NAME,
    EACH_ONCE,
    ENDPOINT_NAME,
    HEADER_NAME,
    HEADER_VALUE,
    QUEUE_NAME,
    ROUTE_PATTERN,
    SIP_URI,
    Codecs,
    Rule,
    Section,
    compile_pattern,
    invalid,
    matches,
    one_of,
)

# how DTMF travels on a bot endpoint (pjsip.conf dtmf_mode); docs/media.md
DTMF_MODES = ("rfc4733", "info", "auto", "auto_info")
# what happens to a caller whose escalation failed (the queue timed out, had no agent, was
# full): a new dialog with a bot of the profile, the overflow queue, or the end of the call
ON_ESCALATION_FAILURE = ("return_to_bot", "overflow", "hangup")
# name prefix of the endpoint and AOR rendered per probed bot URI (pjsip.conf)
BOT_HEALTH_PREFIX = "botbridge-bot-"
# name prefix of the endpoint and auth section rendered per bot URI with digest credentials
BOT_AUTH_PREFIX = "botbridge-auth-"
# a digest user name or realm: written into pjsip.conf as is, so nothing that ends a value
OPTIONAL_AUTH_TOKEN = matches(r"[A-Za-z0-9._~+!$&'()*,=:@-]{0,128}", "unsafe characters")
QueueName = Annotated[str, QUEUE_NAME]
# empty: the bot endpoint's own AOR contact
OptionalSipUri = Annotated[str, Rule(lambda v: SIP_URI.check(v) if v else None)]
# empty: the profile's fallback_queue
OptionalQueueName = Annotated[str, Rule(lambda v: QUEUE_NAME.check(v) if v else None)]
OptionalHeaderName = Annotated[str, Rule(lambda v: HEADER_NAME.check(v) if v else None)]
QualifySeconds = Annotated[int, Meta(ge=0, le=86400)]

# the values of [profiles.default] that every other profile must set itself
DEFAULT_PROFILE: dict[str, Any] = {
    "bot_endpoint": "voicebot",
    "bot_uri": "sip:voicebot@127.0.0.1:5080",
    "answer_timeout_seconds": 15,
    "fallback_queue": "agents-queue",
    "default_queue": "agents-queue",
    "availability_queue": "agents-queue",
}
# escalate_to value from the bot -> queue; replaced whole by a [routing] table
DEFAULT_ROUTING = {"agents-queue": "agents-queue", "billing": "billing-queue"}
DEFAULT_ROUTES = ({"pattern": "_X.", "profile": "default"},)


class BotHealthSettings(Section, frozen=True):
    """``[bot_health]``: SIP OPTIONS probes of the bot URIs (Asterisk qualify)."""

    qualify_frequency_seconds: QualifySeconds = 0  # 0 = not probed (every bot reachable)
    qualify_timeout_seconds: Annotated[float, Meta(ge=0.1, le=60)] = 3.0


class BotTarget(Section, frozen=True, kw_only=False):
    """One ``[[profiles.<name>.bots]]`` entry: a bot URI, its share of first attempts and
    its limits."""

    uri: OptionalSipUri
    # share of first attempts (weighted random among the eligible bots with a weight);
    # 0 = only tried after the first pick, in list order
    weight: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    max_concurrent_calls: Annotated[int, Meta(ge=0, le=100_000)] = 0  # 0 = no limit
    max_calls_per_second: Annotated[float, Meta(ge=0, le=10_000)] = 0.0  # 0 = no limit
    # SIP OPTIONS probe period; None = [bot_health] qualify_frequency_seconds, 0 = off
    qualify_frequency_seconds: QualifySeconds | None = None
    # digest authentication towards this bot (docs/security.md): the user name, the file
    # holding the password (state-relative, never created), the realm (empty: any)
    auth_username: Annotated[str, OPTIONAL_AUTH_TOKEN] = ""
    auth_password_file: str = ""
    auth_realm: Annotated[str, OPTIONAL_AUTH_TOKEN] = ""

    def _validate(self) -> None:
        if bool(self.auth_username) != bool(self.auth_password_file):
            raise invalid("auth_username", "auth_username and auth_password_file go together")

    @property
    def auth_endpoint(self) -> str:
        """The PJSIP endpoint (and auth section) a bot with digest credentials is dialled
        through (pjsip.conf, rendered per URI); empty without credentials."""
        if not self.auth_username:
            return ""
        return BOT_AUTH_PREFIX + hashlib.sha256(self.uri.encode()).hexdigest()[:12]


class BotProfile(Section, frozen=True):
    """``[profiles.<name>]``. Once made, ``bots`` lists the bots in order (``bots``, else
    ``bot_uris``, else ``bot_uri``: never empty) and ``bot_uri`` is the first one's."""

    bot_endpoint: Annotated[str, ENDPOINT_NAME]
    answer_timeout_seconds: Annotated[int, Meta(ge=1, le=300)]
    fallback_queue: QueueName
    default_queue: QueueName
    availability_queue: QueueName
    name: str = ""  # the table's name, filled at load
    bot_uri: OptionalSipUri = ""
    bot_uris: tuple[Annotated[str, SIP_URI], ...] = ()
    bots: tuple[BotTarget, ...] = ()
    # with another bot left to try, one attempt may ring for at most this long (the whole
    # sequence stays within answer_timeout_seconds)
    attempt_timeout_seconds: Annotated[int, Meta(ge=1, le=300)] = 6
    interaction_header: Annotated[str, HEADER_NAME] = "X-Interaction-Id"
    extra_headers: Mapping[Annotated[str, HEADER_NAME], Annotated[str, HEADER_VALUE]] = {}
    post_bot_context: Annotated[str, CONTEXT_NAME] = ""
    uui_discriminator: bool = False
    # media towards the bot (docs/media.md): codecs in order of preference, DTMF mode
    codecs: Codecs = CODECS
    dtmf_mode: Annotated[str, one_of(DTMF_MODES)] = "rfc4733"
    # business_hours "closed": decline the bot's REFER (NOTIFY 404), the bot keeps the caller
    decline_transfer_when_closed: bool = False
    # the queue ended without an agent (docs/call-flows.md, "The queue fails"): what then
    on_escalation_failure: Annotated[str, one_of(ON_ESCALATION_FAILURE)] = "return_to_bot"
    # return_to_bot: at most this many new bot dialogs per call, then overflow_target
    max_escalation_returns: Annotated[int, Meta(ge=0, le=10)] = 2
    # the last resort queue; empty = the profile's fallback_queue
    overflow_target: OptionalQueueName = ""
    # headers that travel (config/headers.py): the caller INVITE's headers copied onto the
    # bot's INVITE; extra User-to-User keys after business_hours; the header that tells the
    # bot the carrier's caller verification (empty: none)
    carrier_headers: tuple[Annotated[str, HEADER_NAME], ...] = ()
    # headers of the bot's REFER copied onto the agent's INVITE, the record and the webhook
    bot_headers: tuple[Annotated[str, HEADER_NAME], ...] = ()
    context_keys: Annotated[tuple[Annotated[str, one_of(CONTEXT_KEYS)], ...], EACH_ONCE] = ()
    verstat_header: OptionalHeaderName = ""
    # the bot may hold the caller this long after it answered, then the caller goes to the
    # fallback queue (error_reason max_bot_seconds); 0 = no limit
    max_bot_seconds: Annotated[int, Meta(ge=0, le=86400)] = 0
    # a call whose carrier verstat is one of verstat_failed (the attestation suffix -A/-B/-C
    # aside) is handled by this profile instead (its bots, queues and settings); empty: none
    on_verstat_failed: str = ""
    verstat_failed: Annotated[tuple[Annotated[str, one_of(VERSTAT_VERDICTS)], ...], EACH_ONCE] = (
        "TN-Validation-Failed",
    )
    # warm transfer (docs/call-flows.md, "Warm transfer"): the bot may place consult calls
    # into the bridge ([bridge] consult_user) and REFER the caller with Replaces naming one;
    # at most max_consults per call, one at a time, each ringing for at most
    # consult_timeout_seconds
    warm_transfer: bool = False
    max_consults: Annotated[int, Meta(ge=1, le=10)] = 2
    consult_timeout_seconds: Annotated[int, Meta(ge=1, le=600)] = 60

    def _validate(self) -> None:
        check_profile_headers(self.carrier_headers, self.interaction_header, self.verstat_header)
        check_bot_headers(self.bot_headers)
        bots = self.bots or tuple(BotTarget(uri) for uri in self.bot_uris)
        bots = bots or (BotTarget(self.bot_uri),)
        if len({b.uri for b in bots}) != len(bots):
            raise invalid("bots", "a bot URI is listed twice")
        msgspec.structs.force_setattr(self, "bots", bots)
        msgspec.structs.force_setattr(self, "bot_uri", bots[0].uri)

    @property
    def dial_string(self) -> str:
        """PJSIP dial string of the first bot, built only from configuration."""
        return self.dial_string_for(self.bot_uri)

    def dial_string_for(self, uri: str) -> str:
        """PJSIP dial string of one of the profile's bot URIs (configuration, never call data):
        through the bot's own endpoint when it has digest credentials."""
        target = next((t for t in self.bots if t.uri == uri), None)
        endpoint = (target.auth_endpoint if target else "") or self.bot_endpoint
        return f"PJSIP/{endpoint}/{uri}" if uri else f"PJSIP/{endpoint}"

    @property
    def overflow_queue(self) -> str:
        return self.overflow_target or self.fallback_queue

    @property
    def targets(self) -> tuple[BotTarget, ...]:
        return self.bots


class Route(Section, frozen=True, kw_only=False):
    """One ``[[routes]]`` entry: a dialled-number pattern, checked and compiled when the route
    is made (at load, never while a call is routed)."""

    pattern: Annotated[str, ROUTE_PATTERN]
    profile: str

    @property
    def regex(self) -> re.Pattern[str]:
        return compile_pattern(self.pattern)  # cached

    def matches(self, number: str) -> bool:
        return self.regex.fullmatch(number) is not None


def check_profiles(profiles: Mapping[str, BotProfile], routes: tuple[Route, ...]) -> None:
    """Rules across profiles and routes (raise :func:`invalid`)."""
    if "default" not in profiles:
        raise invalid("profiles", "a profile named 'default' is required")
    for name, profile in profiles.items():
        if profile.on_verstat_failed and profile.on_verstat_failed not in profiles:
            raise invalid(
                f"profiles.{name}.on_verstat_failed",
                f"names unknown profile {profile.on_verstat_failed!r}",
            )
    for route in routes:
        if route.profile not in profiles:
            raise invalid(
                "routes", f"route {route.pattern!r} names unknown profile {route.profile!r}"
            )
    # codecs and dtmf_mode are settings of the bot's PJSIP endpoint: profiles sharing one
    # endpoint must agree, or one of them would silently get the other's media
    media: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for name, profile in sorted(profiles.items(), key=lambda item: item[0] != "default"):
        mine = (name, profile.codecs, profile.dtmf_mode)
        first = media.setdefault(profile.bot_endpoint, mine)
        if first[1:] != mine[1:]:
            raise invalid(
                "profiles",
                f"profiles {first[0]!r} and {name!r} share bot_endpoint "
                f"{profile.bot_endpoint!r} but differ in codecs or dtmf_mode; "
                "give them the same values or separate endpoints",
            )
