"""The walking skeleton's schema: alert events, broadcasts, receipts, gateways, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alert_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("unit", sa.String(64), nullable=True),
        _ts("ts"),
        _ts("received_at"),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("message", sa.String(256), nullable=False),
    )
    op.create_index("ix_alert_events_ts", "alert_events", ["ts"])
    op.create_index("ix_alert_events_key", "alert_events", ["key"])
    op.create_index("ix_alert_events_site", "alert_events", ["site"])
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("cause", sa.String(36), nullable=True, unique=True),
        sa.Column("buildings", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("headline", sa.String(256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("expires", nullable=True),
        _ts("published_at", nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index("ix_broadcasts_site", "broadcasts", ["site"])
    op.create_table(
        "receipts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("broadcast_id", sa.String(36), nullable=False),
        sa.Column("speaker", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(256), nullable=False),
        _ts("ts"),
        _ts("received_at"),
        sa.UniqueConstraint("broadcast_id", "speaker", "ts"),
    )
    op.create_index("ix_receipts_broadcast_id", "receipts", ["broadcast_id"])
    op.create_table(
        "gateways",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("gateway", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("last_seen"),
        _ts("received_at"),
        sa.Column("outbox_depth", sa.Integer(), nullable=False),
        sa.Column("devices_online", sa.Integer(), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("gateway", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        _ts("last_at"),
    )


def downgrade() -> None:
    for table in ("dead_letters", "gateways", "receipts", "broadcasts", "alert_events"):
        op.drop_table(table)
