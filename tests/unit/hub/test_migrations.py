"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from hub import migrate
from hub.store import Store
from hub.tables import Base
from tests.unit.hub.helpers import NOW, gas_event


def head() -> str:
    """The newest revision; the chain must be linear (one head), or upgrades are ambiguous."""
    heads = ScriptDirectory.from_config(migrate.alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def test_migrated_schema_matches_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert migrate.current(store.engine) == head()


def test_migrating_twice_is_a_no_op(store: Store) -> None:
    store.record_alert(gas_event(), NOW)
    store.create_schema()
    assert len(store.alerts()) == 1


def test_audit_log_is_append_only(store: Store) -> None:
    store.record_alert(gas_event(), NOW)  # opens an incident: one audit line
    assert [a.action for a in store.audit()] == ["incident.opened"]
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as connection:
            connection.execute(text(statement))
    assert [a.actor for a in store.audit()] == ["gateway:s1/g1"]


def test_downgrade_to_the_skeleton_and_back(store: Store) -> None:
    migrate.downgrade(store.engine, "0001")
    assert "incidents" not in inspect(store.engine).get_table_names()
    migrate.upgrade(store.engine)
    assert migrate.current(store.engine) == head()


def test_a_skeleton_database_without_alembic_is_stamped_then_upgraded(tmp_path: Path) -> None:
    """Databases the walking skeleton made with ``create_all`` keep their data."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    # The skeleton's tables, as create_all made them: 0001's schema without Alembic's table.
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(
            text(
                "INSERT INTO alert_events VALUES ('0190b4e0-0000-7000-8000-000000000001', 'k',"
                " 'raised', 'Severe', 'gas', 'r', 's1', 'g1', NULL, NULL, NULL,"
                " :ts, :ts, '{}', '')"
            ),
            {"ts": datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
    engine.dispose()
    store = Store(url)
    store.create_schema()
    assert [a.id for a in store.alerts()] == ["0190b4e0-0000-7000-8000-000000000001"]
    assert migrate.current(store.engine) == head()
    store.close()
