"""Routing decisions, made only from configuration.

A dialled number picks a bot profile; the bot's escalate_to value picks a queue through the
routing map. Nothing the bot sends is ever used as a destination: an unknown value falls back
to the profile's default queue, and the reason is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ari_app.config import BotProfile, Config
from ari_app.sip.headers import verstat_base


@dataclass(frozen=True)
class QueueDecision:
    queue: str
    reason: str | None  # None when the routing map matched


def profile_for(config: Config, dialled: str) -> BotProfile:
    for route in config.routes:
        if route.matches(dialled):
            return config.profiles[route.profile]
    return config.profiles["default"]


def verstat_profile(config: Config, profile: BotProfile, verstat: str) -> BotProfile:
    """The profile that handles a call of ``profile`` whose carrier verstat is ``verstat``:
    its ``on_verstat_failed`` profile when the verdict is one it counts as failed (one hop:
    that profile's own on_verstat_failed is not followed), else ``profile`` itself."""
    if profile.on_verstat_failed and verstat_base(verstat) in profile.verstat_failed:
        return config.profiles[profile.on_verstat_failed]
    return profile


def queue_for(config: Config, profile: BotProfile, escalate_to: str | None) -> QueueDecision:
    if not escalate_to:
        return QueueDecision(profile.default_queue, "escalate_to_missing")
    queue = config.routing.get(escalate_to)
    if queue is None:
        return QueueDecision(profile.default_queue, "escalate_to_unknown")
    return QueueDecision(queue, None)
