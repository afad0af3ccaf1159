"""Reconnect backoff sequence and the HTTP-status-to-exception mapping."""

from __future__ import annotations

import itertools

import pytest

from ari_app.ari import (
    AriBadRequest,
    AriConflict,
    AriConnectionError,
    AriError,
    AriNotFound,
    AriPreconditionFailed,
    AriServerError,
    AriUnauthorized,
    AriUnavailable,
    AriUnprocessable,
    backoff_delays,
    error_for_status,
    next_delay,
)
from ari_app.ari.backoff import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_JITTER_FRACTION,
    BACKOFF_MAX_SECONDS,
)


def no_jitter() -> float:
    return 0.0


def full_jitter() -> float:
    # random.random() never returns 1.0, but the bound is what matters.
    return 1.0


def test_delays_double_from_initial_up_to_the_cap() -> None:
    delays = [next_delay(attempt, rand=no_jitter) for attempt in range(8)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_backoff_delays_generator_matches_next_delay() -> None:
    delays = list(itertools.islice(backoff_delays(rand=no_jitter), 8))

    assert delays == [next_delay(attempt, rand=no_jitter) for attempt in range(8)]


def test_jitter_only_shortens_delays() -> None:
    for attempt in range(10):
        longest = next_delay(attempt, rand=no_jitter)
        shortest = next_delay(attempt, rand=full_jitter)
        assert shortest == pytest.approx(longest * (1 - BACKOFF_JITTER_FRACTION))


def test_real_jitter_stays_within_bounds() -> None:
    for attempt, delay in zip(range(50), backoff_delays(), strict=False):
        assert 0 < delay <= BACKOFF_MAX_SECONDS
        if attempt == 0:
            assert delay <= BACKOFF_INITIAL_SECONDS


def test_huge_attempt_numbers_stay_capped() -> None:
    # A day-long outage must not overflow the exponent.
    assert next_delay(10**6, rand=no_jitter) == BACKOFF_MAX_SECONDS


def test_custom_parameters() -> None:
    delays = [
        next_delay(attempt, initial=1.0, factor=3.0, maximum=20.0, rand=no_jitter)
        for attempt in range(5)
    ]

    assert delays == [1.0, 3.0, 9.0, 20.0, 20.0]


@pytest.mark.parametrize(
    ("attempt", "jitter"),
    [(-1, BACKOFF_JITTER_FRACTION), (0, 1.0), (0, -0.1)],
    ids=["negative-attempt", "jitter-one", "negative-jitter"],
)
def test_invalid_arguments_are_rejected(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        next_delay(attempt, jitter=jitter)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, AriBadRequest),
        (401, AriUnauthorized),
        (404, AriNotFound),
        (409, AriConflict),
        (412, AriPreconditionFailed),
        (422, AriUnprocessable),
        (500, AriServerError),
        (503, AriUnavailable),
        (502, AriServerError),
        (418, AriError),
        (0, AriConnectionError),
    ],
)
def test_error_for_status_picks_the_specific_class(status: int, expected: type[AriError]) -> None:
    error = error_for_status(status, "POST", "/channels/1.2/answer", "Channel not found")

    assert type(error) is expected
    assert isinstance(error, AriError)
    assert error.status == status
    assert error.method == "POST"
    assert error.path == "/channels/1.2/answer"
    assert error.message == "Channel not found"


def test_unavailable_is_a_server_error() -> None:
    assert isinstance(error_for_status(503, "GET", "/channels"), AriServerError)


def test_error_text_says_what_failed() -> None:
    error = error_for_status(404, "DELETE", "/bridges/b-1", "Bridge not found")

    assert str(error) == "ARI DELETE /bridges/b-1 failed with HTTP 404: Bridge not found"


def test_error_text_without_message() -> None:
    assert str(error_for_status(500, "GET", "/channels")) == (
        "ARI GET /channels failed with HTTP 500"
    )


def test_connection_error_text() -> None:
    error = AriConnectionError("GET", "/asterisk/info", "Connection refused")

    assert error.status == 0
    assert str(error) == (
        "ARI GET /asterisk/info failed: no response from Asterisk (Connection refused)"
    )
