"""Alembic environment of the interaction store.

Normally run by ``InteractionStore.upgrade()``, which hands over an open connection in
``config.attributes["connection"]``. Without one (running ``alembic`` by hand with a config
whose ``script_location`` is ``ari_app.store:migrations``), the database is ``sqlalchemy.url`` or
else ``BOTBRIDGE_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from ari_app.store import database_url, lock_for_migration, make_engine, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        lock_for_migration(connection)
        context.run_migrations()


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "BOTBRIDGE_DATABASE_URL", ""
    )
    if not url:
        raise SystemExit("no database: set sqlalchemy.url or BOTBRIDGE_DATABASE_URL")
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        engine = make_engine(database_url(_url()))
        try:
            with engine.begin() as connection:
                _run(connection)
        finally:
            engine.dispose()
