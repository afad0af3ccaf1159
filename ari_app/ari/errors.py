"""Typed errors for ARI REST calls.

Callers branch on the class (``except AriNotFound``) rather than on status numbers, so a
channel that hung up between an event and our request can be told apart from a real fault.
"""

from __future__ import annotations

__all__ = [
    "AriBadRequest",
    "AriConflict",
    "AriConnectionError",
    "AriError",
    "AriNotFound",
    "AriPreconditionFailed",
    "AriServerError",
    "AriUnauthorized",
    "AriUnavailable",
    "AriUnprocessable",
    "error_for_status",
]

# Status used for failures where no HTTP response arrived at all.
NO_HTTP_STATUS = 0
_FIRST_SERVER_ERROR_STATUS = 500


class AriError(Exception):
    """An ARI request failed; ``status`` is the HTTP status (0 when nothing came back)."""

    def __init__(self, status: int, method: str, path: str, message: str | None = None) -> None:
        super().__init__(status, method, path, message)
        self.status = status
        self.method = method
        self.path = path
        self.message = message

    def __str__(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"ARI {self.method} {self.path} failed with HTTP {self.status}{detail}"


class AriBadRequest(AriError):
    """400: Asterisk rejected the parameters (missing or malformed)."""


class AriUnauthorized(AriError):
    """401: the ARI user or password is wrong; check ari.conf."""


class AriNotFound(AriError):
    """404: the channel, bridge or variable does not exist (often: already hung up)."""


class AriConflict(AriError):
    """409: the object exists but is in the wrong place, e.g. not in our Stasis app."""


class AriPreconditionFailed(AriError):
    """412: the channel is in a state that does not allow the operation."""


class AriUnprocessable(AriError):
    """422: the request names something Asterisk cannot act on in this context."""


class AriServerError(AriError):
    """5xx: Asterisk failed internally."""


class AriUnavailable(AriServerError):
    """503: Asterisk is up but ARI is not ready (starting or shutting down)."""


class AriConnectionError(AriError):
    """No HTTP response: connection refused, reset, TLS failure or timeout."""

    def __init__(self, method: str, path: str, message: str | None = None) -> None:
        super().__init__(NO_HTTP_STATUS, method, path, message)

    def __str__(self) -> str:
        detail = f" ({self.message})" if self.message else ""
        return f"ARI {self.method} {self.path} failed: no response from Asterisk{detail}"


_ERRORS_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    401: AriUnauthorized,
    404: AriNotFound,
    409: AriConflict,
    412: AriPreconditionFailed,
    422: AriUnprocessable,
    500: AriServerError,
    503: AriUnavailable,
}


def error_for_status(status: int, method: str, path: str, message: str | None = None) -> AriError:
    """Build the most specific error for an HTTP status (the caller raises it)."""
    if status == NO_HTTP_STATUS:
        return AriConnectionError(method, path, message)
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = AriServerError if status >= _FIRST_SERVER_ERROR_STATUS else AriError
    return cls(status, method, path, message)
