"""Alembic's environment for the hub: runs on the connection ``hub.migrate`` hands it.

Run from the command line too (``alembic -c hub/alembic.ini upgrade head`` with
``ANMIN_HUB_DB`` set), in which case it opens its own connection.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from hub.tables import Base


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _migrate(connection)
        return
    url = os.environ.get("ANMIN_HUB_DB") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set ANMIN_HUB_DB to the database URL to migrate")
    engine = create_engine(url)
    try:
        with engine.begin() as own:
            _migrate(own)
    finally:
        engine.dispose()


run()
