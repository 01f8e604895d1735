"""Web Push subscriptions of family members (hub/push.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "web_push_subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("endpoint", sa.String(1024), nullable=False, unique=True),
        sa.Column("p256dh", sa.String(128), nullable=False),
        sa.Column("auth", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_audit_id", sa.Integer(), nullable=False),
    )
    op.create_index("ix_web_push_subscriptions_person_id", "web_push_subscriptions", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_web_push_subscriptions_person_id", "web_push_subscriptions")
    op.drop_table("web_push_subscriptions")
