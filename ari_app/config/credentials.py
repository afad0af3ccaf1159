"""Secrets: the files that hold them, the ARI password's check, and URLs masked for display.

Nothing here prints a secret: logs, ``repr`` and ``ari-app check-config`` show URLs through
:func:`mask_url` (docs/security.md, "Secrets").
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ari_app.config.values import ConfigError

MASK = "***"
# a query parameter whose name contains one of these holds a secret (?password=, ?token=,
# ?api_key=, ?sig=...): its value is masked
SECRET_QUERY_NAMES = ("pass", "pwd", "token", "secret", "key", "auth", "sig", "credential")
# characters an ARI password cannot hold: a line break would start a new line (a new ARI user)
# in the rendered ari.conf, a ';' starts a comment there (the rest would be cut off)
_ARI_PASSWORD_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f;]")


def mask_url(url: str) -> str:
    """``url`` with its userinfo's password (or a lone user name, often a token) and the
    values of secret-named query parameters replaced by ``***``; anything unparsable is
    masked whole."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK if url else url
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if port is not None:
            host = f"{host}:{port}"
        user = f"{parts.username}:{MASK}" if parts.password is not None else MASK
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if _secret_name(k) else v) for k, v in pairs], safe="*", doseq=False
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing secret (rebuilding could change it: sqlite:////abs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_QUERY_NAMES)


def check_ari_password(password: str, source: str) -> str:
    """``password`` when it can be written into ari.conf as is; ConfigError naming
    ``source`` (the variable or file it came from) otherwise."""
    if _ARI_PASSWORD_FORBIDDEN.search(password):
        raise ConfigError(
            f"the ARI password from {source} holds a line break, another control character "
            "or ';', which would change ari.conf (a new line adds an ARI user, ';' starts a "
            "comment): choose a password without them"
        )
    return password


def ensure_secret_file(path: Path, nbytes: int) -> Path:
    """Create ``path`` with a random URL-safe secret when absent (mode 0600, never replaced)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes) + "\n")
    return path


def read_secret_file(path: Path, nbytes: int, setting: str) -> str:
    """The secret in ``path`` (created with ``nbytes`` random bytes when absent), stripped.

    An empty file is refused naming ``setting`` and the file: it would turn the
    authentication it is for silently off."""
    text = ensure_secret_file(path, nbytes).read_text().strip()
    if not text:
        raise ConfigError(
            f"{setting}: the secret file {path} is empty; write a secret into it "
            "or delete it to have one made"
        )
    return text


# what a digest password cannot hold: pjsip.conf would end the value at a line break
_CONF_VALUE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


def read_given_secret(path: Path, setting: str) -> str:
    """A secret someone else issued (a bot's digest password), from ``path`` (first line,
    stripped): never made up here, so a missing or empty file, or one whose secret holds a
    control character, is a ConfigError naming ``setting`` and the file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if not text or _CONF_VALUE_FORBIDDEN.search(text):
        raise ConfigError(
            f"{setting}: {path} is empty or its secret holds a line break or another "
            "control character"
        )
    return text
