"""Child process of the full-disk test: a record writer on SQLite under RLIMIT_FSIZE.

``python -m tests.store.full_disk_child <db> <journal>`` migrates the store, then lowers the
file-size limit below the database's size (a full disk: every write that would grow a file
fails with EFBIG, SIGXFSZ ignored), writes 20 records (refused), lifts the limit (space
returns) and writes again. Prints JSON: the two flushes' results and the log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import signal
import sys
from pathlib import Path

from ari_app.store import InteractionStore
from ari_app.store.journal import Journal
from ari_app.store.writer import RecordWriter
from tests.store.fault_tools import caller_number

FULL_AT_BYTES = 4096


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # with the traceback, as a log file has it


async def main(db: Path, journal: Path) -> dict[str, object]:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    lines = _Lines()
    logging.getLogger().addHandler(lines)
    store = InteractionStore(db, node="n1")
    with store.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    writer = RecordWriter(store, 0.01, journal=Journal(journal, 1024 * 1024))
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_AT_BYTES, hard))
    for n in range(20):
        writer.create(
            f"{n:032x}", profile="default", caller_channel=f"c{n}", caller_number=caller_number(n)
        )
    while_full = await writer.flush()
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    after = await writer.flush()
    store.close()
    return {"while_full": while_full, "after": after, "logs": lines.lines}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))))
