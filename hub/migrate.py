"""Bring a database to the schema this code expects, with Alembic, at startup.

Safe to run from several hub processes at once: on PostgreSQL the upgrade holds an advisory
lock, so one process migrates and the others find the schema at head. A database made by the
walking skeleton's ``create_all`` (tables, no ``alembic_version``) is stamped 0001 first.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant will do; it names "the hub's schema migration" among PostgreSQL advisory locks.
ADVISORY_LOCK_ID = 0x616E6D696E  # "anmin"
HEAD = "head"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = HEAD) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; PostgreSQL's DDL is transactional.
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
        tables = set(inspect(connection).get_table_names())
        config = alembic_config(connection)
        if "alert_events" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
