"""Composed broadcasts (CAP 1.2, approval, Update/Cancel), their target speakers, outside CAP.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Existing rows are the automatic gas broadcasts of 0001/0002: Actual Alerts.
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="Actual")
        )
        batch.add_column(
            sa.Column("msg_type", sa.String(16), nullable=False, server_default="Alert")
        )
        batch.add_column(sa.Column("refers_to", sa.String(36), nullable=True))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="sent"))
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="auto"))
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False, server_default="Public"))
        batch.add_column(sa.Column("repeat", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("proposed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("approved_by", sa.String(64), nullable=True))
        batch.add_column(_ts("approved_at", nullable=True))
        batch.add_column(sa.Column("override_reason", sa.String(512), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.String(36), nullable=True))
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("spec", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cap_xml", sa.Text(), nullable=True))
    op.create_index("ix_broadcasts_refers_to", "broadcasts", ["refers_to"])
    # Not yet published: approved, waiting for the broker (the publish loop sends them).
    op.execute("UPDATE broadcasts SET state = 'approved' WHERE published_at IS NULL")

    # The speakers a broadcast is meant for, fixed when it is approved (docs/broadcast.md).
    op.create_table(
        "broadcast_targets",
        sa.Column("broadcast_id", sa.String(36), primary_key=True),
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("gateway", sa.String(64), primary_key=True),
        sa.Column("speaker", sa.String(64), primary_key=True),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("known_from", sa.String(16), nullable=False),
        _ts("confirmed_at", nullable=True),
        sa.Column("failed", sa.String(256), nullable=True),
    )
    # Redelivery through each gateway: retries with backoff, and again when it comes back.
    op.create_table(
        "broadcast_gateways",
        sa.Column("broadcast_id", sa.String(36), primary_key=True),
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("gateway", sa.String(64), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_at", nullable=True),
        _ts("last_published_at", nullable=True),
        sa.Column("saw_down", sa.Boolean(), nullable=False),
        sa.Column("devices_online", sa.Integer(), nullable=False),
    )
    op.create_index("ix_broadcast_gateways_next_at", "broadcast_gateways", ["next_at"])

    # CAP alerts from outside authorities, by POST or from a polled Atom feed: what came, what
    # the hub decided, and the broadcast it relayed them as.
    op.create_table(
        "cap_intake",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("sender", sa.String(256), nullable=False),
        sa.Column("identifier", sa.String(256), nullable=False),
        sa.Column("sent", sa.String(64), nullable=False),
        _ts("received_at"),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("broadcast_id", sa.String(36), nullable=True),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.UniqueConstraint("site", "sender", "identifier", "sent"),
    )


def downgrade() -> None:
    op.drop_table("cap_intake")
    op.drop_index("ix_broadcast_gateways_next_at", "broadcast_gateways")
    op.drop_table("broadcast_gateways")
    op.drop_table("broadcast_targets")
    op.drop_index("ix_broadcasts_refers_to", "broadcasts")
    with op.batch_alter_table("broadcasts") as batch:
        for column in (
            "cap_xml",
            "spec",
            "content_hash",
            "superseded_by",
            "override_reason",
            "approved_at",
            "approved_by",
            "proposed_by",
            "repeat",
            "scope",
            "origin",
            "state",
            "refers_to",
            "msg_type",
            "status",
        ):
            batch.drop_column(column)
