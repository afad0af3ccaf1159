"""Every migration is one the previous release, still running during an upgrade's handover,
can live with (CONTRIBUTING.md, "Database migrations"; docs/deployment.md, section 6): it
adds nullable columns (or columns with a default), tables and indexes, and drops, renames
or narrows nothing the previous release reads or writes.

Checked on the SQL Alembic writes for PostgreSQL in offline mode (``upgrade --sql``): no
database needed, and every statement of every revision is seen. The upgrade itself, under
load, is tests/integration/test_upgrade.py.
"""

from __future__ import annotations

import io
import re

import pytest
from alembic import command

from ari_app.store import alembic_config

FIRST = "0001_initial"
REVISION_LINE = re.compile(r"-- Running upgrade (\S+) -> (\S+)")
# what a previous release never notices; an index dropped is only ever a slower query
ALLOWED = re.compile(
    r"BEGIN|COMMIT|UPDATE alembic_version .*|CREATE TABLE \w+ \(.*\)"
    r"|CREATE (UNIQUE )?INDEX .*|DROP INDEX \w+"
    r"|ALTER TABLE \w+ ADD COLUMN \w+ (?P<column>.*)",
    re.DOTALL,
)


def migration_sql() -> str:
    """The PostgreSQL statements of every revision after the first, with Alembic's comments
    naming each revision."""
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", "postgresql+psycopg://botbridge@localhost/botbridge")
    cfg.output_buffer = io.StringIO()
    command.upgrade(cfg, f"{FIRST}:head", sql=True)
    text: str = cfg.output_buffer.getvalue()
    return text


def breaking_statements(sql: str) -> list[str]:
    """``revision: statement`` for each statement a running previous release could trip on."""
    found, revision = [], "?"
    for chunk in sql.split(";\n"):
        lines = []
        for line in chunk.strip().splitlines():
            if (named := REVISION_LINE.fullmatch(line.strip())) is not None:
                revision = named[2]
            elif line.strip() and not line.startswith("--"):
                lines.append(line)
        statement = "\n".join(lines).strip()
        if not statement:
            continue
        allowed = ALLOWED.fullmatch(statement)
        column = allowed["column"] if allowed is not None else None
        if allowed is None or (column and "NOT NULL" in column and "DEFAULT" not in column):
            found.append(f"{revision}: {statement}")
    return found


def test_every_migration_is_one_the_previous_release_lives_with() -> None:
    sql = migration_sql()
    assert "ALTER TABLE interactions ADD COLUMN agent TEXT" in sql  # the newest one is read
    assert breaking_statements(sql) == []


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE interactions DROP COLUMN verstat",
        "ALTER TABLE interactions RENAME COLUMN agent TO answered_by",
        "ALTER TABLE interactions ALTER COLUMN profile TYPE INTEGER",
        "ALTER TABLE interactions ADD COLUMN tenant TEXT NOT NULL",
        "DROP TABLE report_runs",
        "ALTER TABLE report_runs RENAME TO report_claims",
    ],
)
def test_a_migration_the_previous_release_trips_on_is_named(statement: str) -> None:
    sql = (
        "BEGIN;\n\n-- Running upgrade 0009_answering_agent -> 0010_next\n\n"
        "ALTER TABLE interactions ADD COLUMN fine TEXT;\n\n"
        "ALTER TABLE interactions ADD COLUMN counted INTEGER DEFAULT '0' NOT NULL;\n\n"
        f"{statement};\n\nCOMMIT;\n"
    )
    assert breaking_statements(sql) == [f"0010_next: {statement}"]
