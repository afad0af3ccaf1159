"""The app keeps its start-up objects out of the garbage collector's full collections."""

from __future__ import annotations

import gc

from ari_app.main import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


def test_objects_alive_at_start_up_are_no_longer_walked_by_collections() -> None:
    before = _Node()
    before.peer = before  # a cycle: an object the collector tracks
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        walked = gc.get_objects()
        assert not any(o is before for o in walked)
        after = _Node()
        after.peer = after
        assert any(o is after for o in gc.get_objects())
        assert len(walked) < frozen
    finally:
        gc.unfreeze()
    assert any(o is before for o in gc.get_objects())
