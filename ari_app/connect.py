"""The one place ARI clients are made from the configuration: the app, the CLI and the dev
tools all connect through here, so the URL, credentials, TLS trust (``ari.ca_file``) and
connection pool are the same everywhere."""

from __future__ import annotations

import ssl

from ari_app.ari import AriRest, EventStream, OnConnected
from ari_app.config import Config, client_ssl_context

__all__ = ["ari_rest", "ari_ssl_context", "event_stream"]


def ari_ssl_context(config: Config) -> ssl.SSLContext | None:
    """TLS settings for an https:// ARI url: verify Asterisk against ``ari.ca_file``.

    An empty ``ari.ca_file`` means the system trust store; None for a plain http:// url.
    Host names and certificate chains are always checked.
    """
    if not config.ari.url.lower().startswith("https:"):
        return None
    try:
        return client_ssl_context(config, config.ari.ca_file)
    except FileNotFoundError as exc:
        raise SystemExit(f"ari.ca_file: {exc} (`make certs` makes a dev CA)") from exc


def ari_rest(config: Config) -> AriRest:
    return AriRest(
        config.ari.url,
        config.ari.username,
        config.ari_password,
        ssl=ari_ssl_context(config),
        connections=config.limits.ari_connections,
    )


def event_stream(
    config: Config,
    app: str | None = None,
    *,
    on_connected: OnConnected | None = None,
    subscribe_all: bool = False,
    types: frozenset[str] | None = None,
) -> EventStream:
    """The event WebSocket of Stasis app ``app`` (default: the configured one)."""
    return EventStream(
        config.ari.url,
        config.ari.username,
        config.ari_password,
        app or config.ari.app,
        on_connected=on_connected,
        ssl=ari_ssl_context(config),
        subscribe_all=subscribe_all,
        types=types,
    )
