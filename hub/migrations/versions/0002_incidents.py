"""Places, people and roles; incidents, the append-only audit log, deliveries; gateway outages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


SQLITE_AUDIT_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)
POSTGRESQL_AUDIT_TRIGGERS = (
    "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)


def upgrade() -> None:
    op.add_column("alert_events", sa.Column("incident_id", sa.String(36), nullable=True))
    op.create_index("ix_alert_events_incident_id", "alert_events", ["incident_id"])
    op.add_column("gateways", sa.Column("building", sa.String(64), nullable=True))
    op.add_column("gateways", _ts("down_since", nullable=True))
    op.add_column("gateways", sa.Column("offline_incident", sa.String(36), nullable=True))

    op.create_table(
        "sites",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
    )
    op.create_table(
        "buildings",
        sa.Column(
            "site",
            sa.String(64),
            sa.ForeignKey("sites.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "site", sa.String(64), sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("building", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.UniqueConstraint("site", "building", "code"),
    )
    op.create_table(
        "devices",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("gateway", sa.String(64), primary_key=True),
        sa.Column("device", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column(
            "unit_id", sa.Integer(), sa.ForeignKey("units.id", ondelete="SET NULL"), nullable=True
        ),
    )
    op.create_table(
        "residents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("unit_id", sa.Integer(), sa.ForeignKey("units.id"), nullable=False),
    )
    op.create_index("ix_residents_unit_id", "residents", ["unit_id"])
    op.create_table(
        "people",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("email", sa.String(256), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_people_role", "people", ["role"])
    op.create_table(
        "family_links",
        sa.Column(
            "person_id",
            sa.Integer(),
            sa.ForeignKey("people.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "resident_id",
            sa.Integer(),
            sa.ForeignKey("residents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("unit", sa.String(64), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("message", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("opened_at"),
        _ts("last_event_at"),
        sa.Column("event_count", sa.Integer(), nullable=False),
        _ts("cleared_at", nullable=True),
        _ts("acknowledged_at", nullable=True),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
        _ts("resolved_at", nullable=True),
        sa.Column("resolved_by", sa.String(64), nullable=True),
        sa.Column("tier", sa.Integer(), nullable=False),
        _ts("next_escalation_at", nullable=True),
        _ts("updated_at"),
    )
    op.create_index("ix_incidents_cause", "incidents", ["site", "gateway", "key", "state"])
    op.create_index("ix_incidents_next_escalation_at", "incidents", ["next_escalation_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ts("at"),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_subject_id", "audit_log", ["subject_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(36), nullable=False),
        sa.Column("notice", sa.String(32), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("fallback", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        _ts("lease_until", nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        _ts("created_at"),
        _ts("sent_at", nullable=True),
        sa.UniqueConstraint("incident_id", "notice", "person_id", "channel"),
    )
    op.create_index("ix_deliveries_incident_id", "deliveries", ["incident_id"])
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_AUDIT_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in POSTGRESQL_AUDIT_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP FUNCTION audit_log_append_only() CASCADE")
    for table in (
        "deliveries",
        "audit_log",
        "incidents",
        "family_links",
        "people",
        "residents",
        "devices",
        "units",
        "buildings",
        "sites",
    ):
        op.drop_table(table)  # SQLite drops a table's triggers with it
    with op.batch_alter_table("gateways") as batch:
        batch.drop_column("offline_incident")
        batch.drop_column("down_since")
        batch.drop_column("building")
    op.drop_index("ix_alert_events_incident_id", "alert_events")
    with op.batch_alter_table("alert_events") as batch:
        batch.drop_column("incident_id")
