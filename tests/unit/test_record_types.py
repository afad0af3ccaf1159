"""The record is typed once (ari_app/records): a misspelt or mistyped field, written or read,
is a type error that ``mypy`` (``make lint``) reports, not a log line at run time."""

from __future__ import annotations

from pathlib import Path

from mypy import api

from ari_app.records import FIELDS, Record, RecordChange
from ari_app.store.schema import interactions

SNIPPET = """
from typing_extensions import Unpack
from ari_app.records import Record, RecordChange

def change(interaction_id: str, **fields: Unpack[RecordChange]) -> None: ...

def read(row: Record) -> None:
    row["outcom"]  # line 8
    ended: str = row["ended_at"]  # line 9

change("i1", outcome="resolved", ended_at=1.0)
change("i1", outcom="resolved")  # line 12
change("i1", ended_at="now")  # line 13
"""


def test_a_misspelt_or_mistyped_field_fails_mypy(tmp_path: Path) -> None:
    source = tmp_path / "snippet.py"
    source.write_text(SNIPPET)
    out, _, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports",
            "silent",
            str(source),
        ]
    )
    errors = {int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line}
    assert status == 1, out
    assert errors == {8, 9, 12, 13}, out


def test_the_table_has_exactly_the_record_fields() -> None:
    columns = [c.name for c in interactions.columns]
    assert set(columns) - {"interaction_id", "updated_at"} == FIELDS
    assert set(RecordChange.__annotations__) == FIELDS
    assert set(Record.__annotations__) == FIELDS | {"interaction_id", "updated_at", "context"}
