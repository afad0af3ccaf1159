"""The record writer's local files: the journal of unwritten changes, and the set-aside file.

**Journal.** While the database cannot be written, the record writer (ari_app/store/writer.py)
appends its pending changes here instead of keeping them in memory, and replays the file
(oldest first) before anything newer once the database answers again, at the latest at the
next start. One JSON object per line: ``{"id": <interaction id>, "create": bool, "fields":
{...}}``; each append is written and ``fsync``'d before the changes leave memory, so a crash
or a ``kill -9`` after it loses nothing. The file is bounded (``[store] journal_max_bytes``):
an append that would pass the limit is refused and the changes stay in memory. Replaying is
safe to repeat (the store's writes are idempotent), so the file is emptied only after the
replay committed. A torn last line (a crash in the middle of an append) is skipped.

**Set-aside file.** A change the database refuses for its data (not for being down) is
appended to the dead-letter file with the error's class, so that nothing is silently lost and
an operator can look at it, fix it and write it by hand.

Why our own few lines and not a library: the format is the writer's own change, the needs are
append + fsync + read + truncate, and the standard library does each in one call
(docs/decisions.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ari_app.records import RecordChange

__all__ = ["Change", "DeadLetters", "Journal", "merge"]

log = logging.getLogger(__name__)


@dataclass
class Change:
    """What the writer holds for one record: created or not, and the fields to set."""

    create: bool
    fields: RecordChange = field(default_factory=lambda: RecordChange())


def merge(into: dict[str, Change], newer: Mapping[str, Change]) -> dict[str, Change]:
    """``newer`` applied over ``into`` (its values win; a create stays a create)."""
    for iid, change in newer.items():
        old = into.setdefault(iid, Change(False))
        old.create = old.create or change.create
        old.fields.update(change.fields)
    return into


def _lines(changes: Mapping[str, Change], **extra: Any) -> bytes:
    return b"".join(
        json.dumps(
            {"id": iid, "create": c.create, "fields": c.fields, **extra},
            default=str,
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for iid, c in changes.items()
    )


def _append(path: Path, data: bytes) -> None:
    """Write ``data`` at the end of ``path`` and fsync it (the directory too when created)."""
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only, fsync'd, size-bounded file of record changes (see the module text)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.refused = 0  # appends refused (full, or the disk failed): kept in memory
        self.entries = sum(1 for _ in self._read()) if self.size else 0

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, changes: Mapping[str, Change]) -> bool:
        """Append ``changes``, on disk when this returns True; False (nothing appended) when
        the limit would be passed or the file cannot be written."""
        data = _lines(changes)
        if self.size + len(data) > self.max_bytes:
            self.refused += 1
            log.error(
                "record journal %s full (%d of %d bytes): %d record changes stay in memory",
                self.path,
                self.size,
                self.max_bytes,
                len(changes),
            )
            return False
        size = self.size
        try:
            _append(self.path, data)
        except OSError as exc:
            self.refused += 1
            log.error("record journal %s not written (%s); changes stay in memory", self.path, exc)
            self._cut(size)
            return False
        self.entries += len(changes)
        return True

    def changes(self) -> dict[str, Change]:
        """Every change in the file, merged in order (older first, newer values win)."""
        merged: dict[str, Change] = {}
        for entry in self._read():
            fields = cast(RecordChange, dict(entry["fields"]))  # as _lines wrote it
            merge(merged, {entry["id"]: Change(bool(entry["create"]), fields)})
        return merged

    def clear(self) -> None:
        """Empty the file (after its changes were committed)."""
        self._cut(0)
        self.entries = 0

    def _cut(self, size: int) -> None:
        if not self.path.exists():
            return
        with self.path.open("r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> Iterator[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for number, line in enumerate(data.splitlines(), 1):
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and isinstance(entry.get("fields"), dict):
                    yield entry
                    continue
            except ValueError:
                pass
            log.error("record journal %s line %d unreadable; skipped", self.path, number)


class DeadLetters:
    """The file of changes set aside because the database refused their data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def put(self, iid: str, change: Change, reason: str) -> bool:
        """Keep ``change`` (fsync'd); False (logged, without its values) if the file failed."""
        data = _lines({iid: change}, error=reason, set_aside_at=time.time())
        try:
            _append(self.path, data)
        except OSError as exc:
            log.critical("record change of %s not kept in %s (%s)", iid, self.path, exc)
            return False
        return True
