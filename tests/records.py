"""Test helpers: the node the unit tests' store and config name, a stored record that must
exist."""

from __future__ import annotations

from typing import Any, Protocol

# the node the unit tests' in-memory store writes new records as (and their config names)
NODE = "node-a"


class RecordGetter(Protocol):
    def get(self, interaction_id: str) -> dict[str, Any] | None: ...


def stored(store: RecordGetter, interaction_id: str) -> dict[str, Any]:
    """The record of ``interaction_id``; fails the test when there is none."""
    row = store.get(interaction_id)
    assert row is not None, f"no record {interaction_id!r}"
    return row
