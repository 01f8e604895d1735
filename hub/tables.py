"""The hub's tables, as SQLAlchemy models. Alembic migrations (``hub/migrations``) create them.

A test compares these models with the migrated schema, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zone type: SQLAlchemy writes the wall time and reads it back naive.
    Storing UTC and re-attaching UTC on the way out keeps comparisons and JSON honest.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        from datetime import UTC

        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}; the hub stores UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        from datetime import UTC

        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012  (SQLAlchemy reads this class attribute)
        datetime: UtcDateTime,
        dict[str, float]: JSON,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


# The walking skeleton's tables (migration 0001).


class AlertRow(Base):
    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_ts", "ts"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the edge's UUIDv7
    key: Mapped[str] = mapped_column(String(200), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64), index=True)
    gateway: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(64))
    building: Mapped[str | None] = mapped_column(String(64))
    unit: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[datetime]
    received_at: Mapped[datetime]
    evidence: Mapped[dict[str, float]]
    message: Mapped[str] = mapped_column(String(256))
    # Added in 0002: the incident this event belongs to (no foreign key: events come first).
    incident_id: Mapped[str | None] = mapped_column(String(36), index=True)


class BroadcastRow(Base):
    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    # Unique: one alarm gives one broadcast, even if its event arrives twice. NULL for manual
    # broadcasts later; both SQLite and PostgreSQL allow many NULLs under a unique constraint.
    cause: Mapped[str | None] = mapped_column(String(36), unique=True)
    buildings: Mapped[list[str]]
    severity: Mapped[str] = mapped_column(String(16))
    headline: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    # The exact wire bytes (UTF-8 JSON), so a republish after a crash sends what was decided.
    payload: Mapped[str] = mapped_column(Text)
    # 0003: composed broadcasts (hub/broadcasting.py). CAP's status and msgType; the broadcast
    # an Update or Cancel replaces; pending -> approved -> sent (or rejected); who proposed and
    # approved it, or the reason of an emergency override; what the speakers must say (hash).
    status: Mapped[str] = mapped_column(String(16), server_default="Actual")
    msg_type: Mapped[str] = mapped_column(String(16), server_default="Alert")
    refers_to: Mapped[str | None] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(16), server_default="sent")
    origin: Mapped[str] = mapped_column(String(16), server_default="auto")  # manual, relay
    scope: Mapped[str] = mapped_column(String(16), server_default="Public")
    repeat: Mapped[int] = mapped_column(Integer, server_default="1")
    proposed_by: Mapped[str | None] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    override_reason: Mapped[str | None] = mapped_column(String(512))
    superseded_by: Mapped[str | None] = mapped_column(String(36))  # a later Update or Cancel
    content_hash: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the request as composed
    cap_xml: Mapped[str | None] = mapped_column(Text)


class BroadcastTargetRow(Base):
    """A speaker a broadcast is meant for (0003), and when its receipt confirmed it played
    the right words. Fixed when the broadcast is approved; a speaker that answers without
    being targeted joins (``known_from`` "receipt")."""

    __tablename__ = "broadcast_targets"

    broadcast_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    speaker: Mapped[str] = mapped_column(String(64), primary_key=True)
    building: Mapped[str | None] = mapped_column(String(64))
    known_from: Mapped[str] = mapped_column(String(16))  # directory, receipts, receipt
    confirmed_at: Mapped[datetime | None]
    failed: Mapped[str | None] = mapped_column(String(256))  # the last failed receipt's detail


class BroadcastGatewayRow(Base):
    """Redelivery of a broadcast through one gateway (0003): bounded retries with backoff,
    and a republish when the gateway comes back from an outage."""

    __tablename__ = "broadcast_gateways"
    __table_args__ = (Index("ix_broadcast_gateways_next_at", "next_at"),)

    broadcast_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)  # retries so far (the first send is not one)
    next_at: Mapped[datetime | None]  # None: done (all confirmed, expired, cancelled, given up)
    last_published_at: Mapped[datetime | None]
    saw_down: Mapped[bool] = mapped_column(Boolean)  # offline since the last publish
    devices_online: Mapped[int] = mapped_column(Integer)  # at the last publish


class CapIntakeRow(Base):
    """A CAP alert from an outside authority (0003): what came, what was decided, and the
    broadcast it was relayed as."""

    __tablename__ = "cap_intake"
    __table_args__ = (UniqueConstraint("site", "sender", "identifier", "sent"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(512))  # "post:{username}" or the feed URL
    sender: Mapped[str] = mapped_column(String(256))
    identifier: Mapped[str] = mapped_column(String(256))
    sent: Mapped[str] = mapped_column(String(64))  # as written in the CAP
    received_at: Mapped[datetime]
    decision: Mapped[str] = mapped_column(String(16))  # relayed, held, refused
    reason: Mapped[str] = mapped_column(String(512))
    broadcast_id: Mapped[str | None] = mapped_column(String(36))
    xml: Mapped[str] = mapped_column(Text)


class ReceiptRow(Base):
    __tablename__ = "receipts"
    # A re-delivered receipt (QoS 1 is at-least-once) is stored once.
    __table_args__ = (UniqueConstraint("broadcast_id", "speaker", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: a receipt for a broadcast this database does not know (another hub, a
    # reset database) is still a fact worth keeping.
    broadcast_id: Mapped[str] = mapped_column(String(36), index=True)
    speaker: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    building: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(256))
    ts: Mapped[datetime]
    received_at: Mapped[datetime]


class GatewayRow(Base):
    """A gateway: its heartbeat state, and (0002) where it is and whether it is overdue."""

    __tablename__ = "gateways"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    last_seen: Mapped[datetime]  # the newest heartbeat's own ts
    received_at: Mapped[datetime]
    outbox_depth: Mapped[int] = mapped_column(Integer)
    devices_online: Mapped[int] = mapped_column(Integer)
    # 0002: the building it serves, and when it went silent or said offline (None: it is fine).
    building: Mapped[str | None] = mapped_column(String(64))
    down_since: Mapped[datetime | None]
    # The gateway-offline incident raised for this outage, once the grace period has passed.
    offline_incident: Mapped[str | None] = mapped_column(String(36))


class DeadLetterCountRow(Base):
    """How many inputs each gateway rejected, by reason; the dead letters themselves stay out."""

    __tablename__ = "dead_letters"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[datetime]


# Places, people and roles (migration 0002). Places use the wire's ids (site, building and unit
# codes) so that an alert event finds its place without a lookup table in the edge.


class SiteRow(Base):
    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))


class BuildingRow(Base):
    __tablename__ = "buildings"

    site: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))


class UnitRow(Base):
    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("site", "building", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(64), ForeignKey("sites.id", ondelete="CASCADE"))
    building: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))


class DeviceRow(Base):
    __tablename__ = "devices"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="SET NULL"))


class ResidentRow(Base):
    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)


class PersonRow(Base):
    """Someone the hub tells or lets in. ``role`` is one of ``hub.auth.ROLES``."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(256))  # argon2; None: cannot log in
    email: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class FamilyLinkRow(Base):
    """A family member and their relative: the only resident whose data they may read."""

    __tablename__ = "family_links"

    person_id: Mapped[int] = mapped_column(
        ForeignKey("people.id", ondelete="CASCADE"), primary_key=True
    )
    resident_id: Mapped[int] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), primary_key=True
    )


# Incidents, the audit log, escalation and deliveries (migration 0002).


class IncidentRow(Base):
    """Alert events of one cause (site, gateway, alert key) within a window.

    ``next_escalation_at`` is the escalation timer: the database holds it, so it survives a
    restart, and the hub that locks the row fires it.
    """

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_cause", "site", "gateway", "key", "state"),
        Index("ix_incidents_next_escalation_at", "next_escalation_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))  # the highest seen
    building: Mapped[str | None] = mapped_column(String(64))
    unit: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))  # open, acknowledged, resolved
    opened_at: Mapped[datetime]
    last_event_at: Mapped[datetime]
    event_count: Mapped[int] = mapped_column(Integer)
    cleared_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    # The escalation tier last notified (-1: none yet) and when the next one is due.
    tier: Mapped[int] = mapped_column(Integer)
    next_escalation_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class AuditRow(Base):
    """Who did what, when. Append-only: database triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))  # a username, "system" or "gateway:site/gw"
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    site: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]]


class DeliveryRow(Base):
    """One notification to one person through one channel, and what became of it.

    ``notice`` says why (``tier:0``, ``tier:1``, ``fallback``...). The unique constraint is what
    makes each notification happen once even when two hubs decide it at the same moment.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("incident_id", "notice", "person_id", "channel"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(36), index=True)
    notice: Mapped[str] = mapped_column(String(32))
    person_id: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(64))
    fallback: Mapped[str | None] = mapped_column(String(64))
    # queued -> sending -> sent | retrying -> ... -> failed (then the fallback is queued)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class WebPushSubscriptionRow(Base):
    """(0004) A browser's Web Push subscription, for a family member (hub/push.py).

    ``last_audit_id``: the newest audit line (an incident opening) pushed to it; moving it
    forward in one UPDATE is how exactly one hub claims each push.
    """

    __tablename__ = "web_push_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(Integer, index=True)
    endpoint: Mapped[str] = mapped_column(String(1024), unique=True)
    p256dh: Mapped[str] = mapped_column(String(128))
    auth: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_audit_id: Mapped[int] = mapped_column(Integer)
