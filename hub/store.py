"""The hub's durable state: alert events, broadcasts, receipts, gateways, dead-letter counts.

A sync SQLAlchemy engine; async callers use ``asyncio.to_thread``. SQLite by default, and the
same code runs on PostgreSQL, so only portable SQL is used: idempotency comes from primary
keys and unique constraints (select first, and an ``IntegrityError`` from a concurrent writer
means "already there"), never from a dialect's ``ON CONFLICT``.

Tables are created with ``metadata.create_all`` for now; Alembic migrations come later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from hub.errors import StoreError
from hub.policy import Policy, broadcast_for
from wire import AlertEvent, Broadcast, Codec, DeadLetter, Heartbeat, Receipt

log = logging.getLogger(__name__)

# SQLite waits this long for another writer instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 5.0


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zone type: SQLAlchemy writes the wall time and reads it back naive.
    Storing UTC and re-attaching UTC on the way out keeps comparisons and JSON honest.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}; the hub stores UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
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
        list[str]: JSON,
    }


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
    __tablename__ = "gateways"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    last_seen: Mapped[datetime]  # the newest heartbeat's own ts
    received_at: Mapped[datetime]
    outbox_depth: Mapped[int] = mapped_column(Integer)
    devices_online: Mapped[int] = mapped_column(Integer)


class DeadLetterCountRow(Base):
    """How many inputs each gateway rejected, by reason; the dead letters themselves stay out."""

    __tablename__ = "dead_letters"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[datetime]


# What the store hands out: plain frozen records, detached from any session.


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: str
    key: str
    phase: str
    severity: str
    kind: str
    rule: str
    site: str
    gateway: str
    device: str | None
    building: str | None
    unit: str | None
    ts: datetime
    received_at: datetime
    evidence: dict[str, float]
    message: str


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    broadcast_id: str
    speaker: str
    site: str
    gateway: str
    building: str | None
    outcome: str
    content_hash: str
    detail: str
    ts: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class BroadcastRecord:
    id: str
    site: str
    cause: str | None
    buildings: list[str]
    severity: str
    headline: str
    text: str
    language: str
    created_at: datetime
    expires: datetime | None
    published_at: datetime | None
    payload: bytes
    receipts: tuple[ReceiptRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    site: str
    gateway: str
    state: str
    last_seen: datetime
    received_at: datetime
    outbox_depth: int
    devices_online: int


def _alert_record(row: AlertRow) -> AlertRecord:
    return AlertRecord(
        id=row.id,
        key=row.key,
        phase=row.phase,
        severity=row.severity,
        kind=row.kind,
        rule=row.rule,
        site=row.site,
        gateway=row.gateway,
        device=row.device,
        building=row.building,
        unit=row.unit,
        ts=row.ts,
        received_at=row.received_at,
        evidence=dict(row.evidence),
        message=row.message,
    )


def _receipt_record(row: ReceiptRow) -> ReceiptRecord:
    return ReceiptRecord(
        broadcast_id=row.broadcast_id,
        speaker=row.speaker,
        site=row.site,
        gateway=row.gateway,
        building=row.building,
        outcome=row.outcome,
        content_hash=row.content_hash,
        detail=row.detail,
        ts=row.ts,
        received_at=row.received_at,
    )


def _broadcast_record(
    row: BroadcastRow, receipts: tuple[ReceiptRecord, ...] = ()
) -> BroadcastRecord:
    return BroadcastRecord(
        id=row.id,
        site=row.site,
        cause=row.cause,
        buildings=list(row.buildings),
        severity=row.severity,
        headline=row.headline,
        text=row.text,
        language=row.language,
        created_at=row.created_at,
        expires=row.expires,
        published_at=row.published_at,
        payload=row.payload.encode("utf-8"),
        receipts=receipts,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: the API reads while intake writes, without either waiting for the other.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


class Store:
    """The hub's database. Every method is blocking: call it through ``asyncio.to_thread``."""

    def __init__(self, url: str, *, policy: Policy = broadcast_for, echo: bool = False) -> None:
        self.url = url
        self.policy = policy
        self._codec = Codec()
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            database = parsed.database
            in_memory = database in (None, "", ":memory:")
            if not in_memory and database is not None:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # Calls come from worker threads; SQLAlchemy's pool keeps one connection per use.
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_S,
            }
            if in_memory:
                kwargs["poolclass"] = StaticPool  # one shared in-memory database
        else:
            kwargs["pool_pre_ping"] = True  # a server may have dropped idle connections
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; serialising our own writes avoids SQLITE_BUSY on a
        # read-then-write transaction. PostgreSQL handles concurrent writers itself.
        self._write_lock = threading.Lock() if self.is_sqlite else None

    def create_schema(self) -> None:
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot create the schema: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""
        with self._reading() as session:
            session.execute(text("SELECT 1"))

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One transaction; ``IntegrityError`` passes through for the caller to interpret."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(str(exc)) from exc

    # Alert events and the broadcasts they cause.

    def record_alert(self, event: AlertEvent, now: datetime) -> tuple[bool, Broadcast | None]:
        """Store an alert event once. Returns (new?, the broadcast it caused if new).

        The broadcast row is written in the same transaction as the event, unpublished, so a
        crash between commit and publish is repaired by ``unpublished_broadcasts``.
        """
        broadcast = self.policy(event, now)
        try:
            with self._writing() as session:
                if session.get(AlertRow, event.id) is not None:
                    return False, None
                session.add(
                    AlertRow(
                        id=event.id,
                        key=event.key,
                        phase=event.phase.value,
                        severity=event.severity.value,
                        kind=event.kind,
                        rule=event.rule,
                        site=event.site,
                        gateway=event.gateway,
                        device=event.device,
                        building=event.building,
                        unit=event.unit,
                        ts=event.ts,
                        received_at=now,
                        evidence=dict(event.evidence),
                        message=event.message,
                    )
                )
                if broadcast is not None and self._alarm_broadcast(session, event):
                    broadcast = None
                if broadcast is not None:
                    session.add(self._broadcast_row(broadcast, now))
        except IntegrityError:
            # Another hub worker stored the same event between our check and our insert.
            return False, None
        return True, broadcast

    @staticmethod
    def _alarm_broadcast(session: Session, event: AlertEvent) -> bool:
        """Has this alarm (same site, gateway and key, since it last cleared) been broadcast?

        An alarm that escalates again, or whose events arrive twice, is broadcast once.
        """
        same_alarm = (
            (AlertRow.site == event.site)
            & (AlertRow.gateway == event.gateway)
            & (AlertRow.key == event.key)
        )
        last_clear = session.scalar(
            select(func.max(AlertRow.ts)).where(same_alarm & (AlertRow.phase == "cleared"))
        )
        query = select(BroadcastRow.id).join(AlertRow, AlertRow.id == BroadcastRow.cause)
        # Only a broadcast still in force counts: if a clear was never received (the gateway
        # restarted), a leak hours later must still be announced.
        query = query.where(same_alarm & (BroadcastRow.expires > event.ts))
        if last_clear is not None:
            query = query.where(AlertRow.ts > last_clear)
        return session.scalar(query.limit(1)) is not None

    def _broadcast_row(self, broadcast: Broadcast, now: datetime) -> BroadcastRow:
        return BroadcastRow(
            id=broadcast.id,
            site=broadcast.site,
            cause=broadcast.cause,
            buildings=list(broadcast.buildings),
            severity=broadcast.severity.value,
            headline=broadcast.headline,
            text=broadcast.text,
            language=broadcast.language,
            created_at=now,
            expires=broadcast.expires,
            published_at=None,
            payload=self._codec.encode(broadcast).decode("utf-8"),
        )

    def unpublished_broadcasts(self, now: datetime | None = None) -> list[BroadcastRecord]:
        """Broadcasts not yet handed to the broker, oldest first; with ``now``, unexpired only."""
        query = select(BroadcastRow).where(BroadcastRow.published_at.is_(None))
        if now is not None:
            query = query.where((BroadcastRow.expires.is_(None)) | (BroadcastRow.expires > now))
        query = query.order_by(BroadcastRow.created_at, BroadcastRow.id)
        with self._reading() as session:
            return [_broadcast_record(row) for row in session.scalars(query)]

    def mark_published(self, broadcast_id: str, at: datetime) -> None:
        with self._writing() as session:
            session.execute(
                update(BroadcastRow)
                .where(BroadcastRow.id == broadcast_id, BroadcastRow.published_at.is_(None))
                .values(published_at=at)
            )

    # Receipts, heartbeats, dead letters.

    def record_receipt(self, receipt: Receipt, *, site: str, gateway: str, now: datetime) -> bool:
        """Store a speaker's receipt once; False when it was already stored."""
        try:
            with self._writing() as session:
                existing = session.scalar(
                    select(ReceiptRow.id).where(
                        ReceiptRow.broadcast_id == receipt.broadcast_id,
                        ReceiptRow.speaker == receipt.speaker,
                        ReceiptRow.ts == receipt.ts,
                    )
                )
                if existing is not None:
                    return False
                session.add(
                    ReceiptRow(
                        broadcast_id=receipt.broadcast_id,
                        speaker=receipt.speaker,
                        site=site,
                        gateway=gateway,
                        building=receipt.building,
                        outcome=receipt.outcome,
                        content_hash=receipt.content_hash,
                        detail=receipt.detail,
                        ts=receipt.ts,
                        received_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

    def record_heartbeat(self, heartbeat: Heartbeat, now: datetime) -> None:
        """Upsert the gateway's state; an older heartbeat (retained, reordered) changes nothing."""
        try:
            with self._writing() as session:
                row = session.get(GatewayRow, (heartbeat.site, heartbeat.gateway))
                if row is None:
                    session.add(
                        GatewayRow(
                            site=heartbeat.site,
                            gateway=heartbeat.gateway,
                            state=heartbeat.state,
                            last_seen=heartbeat.ts,
                            received_at=now,
                            outbox_depth=heartbeat.outbox_depth,
                            devices_online=heartbeat.devices_online,
                        )
                    )
                # The last will (offline) is made when the gateway connects, so it is older
                # than the heartbeats that follow; it still comes last, and wins.
                elif heartbeat.ts >= row.last_seen or heartbeat.state == "offline":
                    row.state = heartbeat.state
                    row.last_seen = max(heartbeat.ts, row.last_seen)
                    row.received_at = now
                    row.outbox_depth = heartbeat.outbox_depth
                    row.devices_online = heartbeat.devices_online
        except IntegrityError:
            # A concurrent worker inserted this gateway first; the next heartbeat updates it.
            log.debug("heartbeat of %s/%s raced another writer", heartbeat.site, heartbeat.gateway)

    def record_dead_letter(self, dead_letter: DeadLetter, now: datetime) -> None:
        """Count a gateway's rejected input by reason."""
        key = (dead_letter.site, dead_letter.gateway, dead_letter.reason)
        try:
            with self._writing() as session:
                # An UPDATE ... count + 1 is atomic on every database; insert only the first.
                result = session.execute(
                    update(DeadLetterCountRow)
                    .where(
                        DeadLetterCountRow.site == key[0],
                        DeadLetterCountRow.gateway == key[1],
                        DeadLetterCountRow.reason == key[2],
                    )
                    .values(count=DeadLetterCountRow.count + 1, last_at=now)
                )
                if getattr(result, "rowcount", 0) == 0:
                    session.add(
                        DeadLetterCountRow(
                            site=key[0], gateway=key[1], reason=key[2], count=1, last_at=now
                        )
                    )
        except IntegrityError:
            log.debug("dead-letter count %s raced another writer", key)

    # Listings for the API.

    def alerts(self, limit: int = 100, offset: int = 0) -> list[AlertRecord]:
        """Stored alert events, newest (by the event's own time) first."""
        query = (
            select(AlertRow)
            .order_by(AlertRow.ts.desc(), AlertRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as session:
            return [_alert_record(row) for row in session.scalars(query)]

    def broadcasts(self, limit: int = 100, offset: int = 0) -> list[BroadcastRecord]:
        """Broadcasts, newest first, each with its receipts (oldest first)."""
        query = (
            select(BroadcastRow)
            .order_by(BroadcastRow.created_at.desc(), BroadcastRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as session:
            rows = list(session.scalars(query))
            receipts: dict[str, list[ReceiptRecord]] = {row.id: [] for row in rows}
            if receipts:
                receipt_rows = session.scalars(
                    select(ReceiptRow)
                    .where(ReceiptRow.broadcast_id.in_(list(receipts)))
                    .order_by(ReceiptRow.ts, ReceiptRow.id)
                )
                for receipt in receipt_rows:
                    receipts[receipt.broadcast_id].append(_receipt_record(receipt))
            return [_broadcast_record(row, tuple(receipts[row.id])) for row in rows]

    def broadcast(self, broadcast_id: str) -> BroadcastRecord | None:
        with self._reading() as session:
            row = session.get(BroadcastRow, broadcast_id)
            if row is None:
                return None
            receipt_rows = session.scalars(
                select(ReceiptRow)
                .where(ReceiptRow.broadcast_id == broadcast_id)
                .order_by(ReceiptRow.ts, ReceiptRow.id)
            )
            return _broadcast_record(row, tuple(_receipt_record(r) for r in receipt_rows))

    def gateways(self) -> list[GatewayRecord]:
        query = select(GatewayRow).order_by(GatewayRow.site, GatewayRow.gateway)
        with self._reading() as session:
            return [
                GatewayRecord(
                    site=row.site,
                    gateway=row.gateway,
                    state=row.state,
                    last_seen=row.last_seen,
                    received_at=row.received_at,
                    outbox_depth=row.outbox_depth,
                    devices_online=row.devices_online,
                )
                for row in session.scalars(query)
            ]

    def dead_letter_counts(self) -> dict[tuple[str, str, str], int]:
        """(site, gateway, reason) -> how many inputs the gateway rejected for that reason."""
        with self._reading() as session:
            return {
                (row.site, row.gateway, row.reason): row.count
                for row in session.scalars(select(DeadLetterCountRow))
            }
