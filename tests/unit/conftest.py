"""Fixtures of the unit tests: the in-memory store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ari_app.store import InteractionStore
from tests.records import NODE


@pytest.fixture
def store() -> Iterator[InteractionStore]:
    """An in-memory store; new records are ``NODE``'s."""
    store = InteractionStore(":memory:", node=NODE)
    yield store
    store.close()
