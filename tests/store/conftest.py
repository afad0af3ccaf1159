"""Store tests run twice: on SQLite (a temporary file) and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ari_app.store import InteractionStore
from tests.postgres import PostgresServer, PostgresUnavailable, stoppable_postgres

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend; PostgreSQL starts on first use."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'interactions.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def store(database_url: str) -> Iterator[InteractionStore]:
    """An interaction store on each backend, as node ``node-a``."""
    store = InteractionStore(database_url, node="node-a")
    yield store
    store.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start (fault tests)."""
    yield from stoppable_postgres()
