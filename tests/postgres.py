"""The throwaway PostgreSQL server of the store tests lives in devtools (``make cluster-up``
uses it too); re-exported here for the tests, with the server a fault test may stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.postgres import PostgresServer, PostgresUnavailable, find_bin_dir

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bin_dir", "stoppable_postgres"]


def stoppable_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, which it may stop and start (fault tests); the body of a
    fixture. A test without one fails: never an existing server's URL, which it must not stop."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))
    if server.data_dir is None:
        server.stop()
        pytest.fail("fault tests stop the server: they need a throwaway one, not an existing URL")
    yield server
    server.stop()
