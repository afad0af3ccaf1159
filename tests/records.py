"""Test helper: a stored interaction record that must exist."""

from __future__ import annotations

from typing import Any, Protocol


class RecordGetter(Protocol):
    def get(self, interaction_id: str) -> dict[str, Any] | None: ...


def stored(store: RecordGetter, interaction_id: str) -> dict[str, Any]:
    """The record of ``interaction_id``; fails the test when there is none."""
    row = store.get(interaction_id)
    assert row is not None, f"no record {interaction_id!r}"
    return row
