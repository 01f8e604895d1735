"""The hub's durable state: alert events, broadcasts, receipts, gateways, dead-letter counts.

A sync SQLAlchemy engine; async callers use ``asyncio.to_thread``. SQLite by default, and the
same code runs on PostgreSQL, so only portable SQL is used (PostgreSQL gets its advisory locks,
which SQLite's single writer makes unnecessary, and arrays where an ``IN`` list would cost a
parse per batch): idempotency comes from primary keys and unique constraints (select first,
and an ``IntegrityError`` from a concurrent writer means "already there"), never from a
dialect's ``ON CONFLICT``.

The schema comes from Alembic migrations (``hub.migrate``), run by ``create_schema`` at startup.
Alert events are grouped into incidents in the same transaction that stores them
(``hub.incidents``), so an event and its incident are never out of step.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from hub import broadcast_rows, directory, incidents
from hub.directory import PersonRecord, ResidentRecord
from hub.errors import StoreError
from hub.incidents import EVERYTHING, AuditRecord, IncidentRecord, Scope
from hub.policy import Policy, broadcast_for
from hub.tables import (
    AlertRow,
    AuditRow,
    BroadcastGatewayRow,
    BroadcastRow,
    DeadLetterCountRow,
    GatewayRow,
    IncidentRow,
    PersonRow,
    ReceiptRow,
)
from wire import AlertEvent, Broadcast, Codec, DeadLetter, Heartbeat, Receipt

log = logging.getLogger(__name__)

# SQLite waits this long for another writer instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 5.0


# What the store hands out: plain frozen records, detached from any session.


@dataclass(frozen=True, slots=True)
class Recorded:
    """What storing an alert event did."""

    stored: bool  # False: a repeat, already stored
    broadcast: Broadcast | None
    incident_id: str | None
    incident_opened: bool


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


@dataclass(frozen=True, slots=True)
class GatewayState:
    site: str
    gateway: str
    state: str
    last_seen: datetime
    received_at: datetime
    outbox_depth: int
    devices_online: int
    stale: bool
    down_since: datetime | None
    offline_incident: str | None


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


def _cause(event: AlertEvent) -> str:
    """What one incident is about: the alarm's key at its gateway."""
    return f"{event.site}/{event.gateway}/{event.key}"


class Store:
    """The hub's database. Every method is blocking: call it through ``asyncio.to_thread``."""

    def __init__(
        self,
        url: str,
        *,
        policy: Policy = broadcast_for,
        incident_window: timedelta = incidents.DEFAULT_WINDOW,
        gateway_stale_after: timedelta = timedelta(minutes=3),
        gateway_grace: timedelta = timedelta(minutes=2),
        echo: bool = False,
    ) -> None:
        self.url = url
        self.policy = policy
        self.incident_window = incident_window
        self.gateway_stale_after = gateway_stale_after
        self.gateway_grace = gateway_grace
        # Broadcast redelivery (hub.broadcasting); a gateway is down when stale, as above.
        self.redelivery = broadcast_rows.Redelivery(stale_after=gateway_stale_after)
        self._codec = Codec()
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.is_postgresql = parsed.get_backend_name() == "postgresql"
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
            kwargs["pool_size"] = 10
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time: within a process this lock queues our writers (the
        # busy handler's sleeps are coarse); across processes BEGIN IMMEDIATE does (_writing).
        # PostgreSQL handles concurrent writers itself.
        self._write_lock = threading.Lock() if self.is_sqlite else None

    def create_schema(self) -> None:
        """Migrate the database to the newest schema (Alembic); safe with several hubs."""
        from hub import migrate

        try:
            migrate.upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the schema: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""
        with self._reading() as session:
            session.execute(text("SELECT 1"))

    def writing(self) -> AbstractContextManager[Session]:
        """One write transaction, for the hub's other modules (escalation, deliveries)."""
        return self._writing()

    def reading(self) -> AbstractContextManager[Session]:
        return self._reading()

    def lock_cause(self, session: Session, cause: str) -> None:
        """Serialise writers of one cause (an alert key, a gateway) across hub processes.

        PostgreSQL: a transaction-scoped advisory lock on the cause's hash. SQLite has one
        writer at a time anyway.
        """
        if self.is_postgresql:
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:cause))"), {"cause": cause}
            )

    def skip_locked(self, query: Select[Any]) -> Select[Any]:
        """``FOR UPDATE SKIP LOCKED`` where the database has it (PostgreSQL): each due row goes
        to one hub. On SQLite the single writer makes it unnecessary."""
        if self.is_postgresql:
            return query.with_for_update(skip_locked=True)
        return query

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One transaction; ``IntegrityError`` passes through for the caller to interpret."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._sessions.begin() as session:
                if self.is_sqlite:
                    # Take the write lock before the first read. The driver would begin only at
                    # the first write, so two hub processes could both read a due row, then
                    # both claim it; IMMEDIATE makes the other wait (busy_timeout) and re-read.
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
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
        recorded = self.record_alert_event(event, now)
        return recorded.stored, recorded.broadcast

    def record_alert_event(self, event: AlertEvent, now: datetime) -> Recorded:
        """Store an alert event once, with its incident and any broadcast, in one transaction."""
        return self.record_alert_events([event], now)[0]

    def record_alert_events(self, events: Sequence[AlertEvent], now: datetime) -> list[Recorded]:
        """Store alert events once each, with their incidents and broadcasts, in ONE transaction.

        One commit (one disk sync) for a batch is what lets the intake keep up with a flood,
        and so is a handful of statements per batch rather than several per event: the causes
        are locked in one statement, the repeats found in one, the causes' incidents loaded in
        one, and the new events inserted in one (``_record_batch``). The causes are locked in
        one fixed order before anything else, so two hubs' batches can wait for each other but
        never deadlock. If another hub inserted one of the events meanwhile (it can only be an
        event that names another cause under the same id), the batch is rolled back and each
        event is stored on its own.
        """
        if not events:
            return []
        decided = [(event, self.policy(event, now)) for event in events]
        try:
            with self._writing() as session:
                # Events of one cause are handled one at a time across hubs, so a cause never
                # gets two incidents and a repeat always finds the first copy.
                self.lock_causes(session, {_cause(event) for event in events})
                return self._record_batch(session, decided, now)
        except IntegrityError:
            if len(events) == 1:
                # Another hub worker stored the same event between our check and our insert.
                return [Recorded(False, None, None, False)]
            return [self.record_alert_event(event, now) for event in events]

    def lock_causes(self, session: Session, causes: Iterable[str]) -> None:
        """``lock_cause`` for many causes in one statement, in the order of their lock keys
        (every hub takes a batch's locks in that one order, so none waits on another in a
        circle; two causes that share a key take it once)."""
        wanted = sorted(set(causes))
        if self.is_postgresql and wanted:
            session.execute(
                text(
                    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtext(c) AS k"
                    " FROM unnest(CAST(:causes AS text[])) AS c ORDER BY k) AS keys"
                ),
                {"causes": wanted},
            )

    def _record_batch(
        self,
        session: Session,
        decided: Sequence[tuple[AlertEvent, Broadcast | None]],
        now: datetime,
    ) -> list[Recorded]:
        ids = sorted({alert.id for alert, _ in decided})
        arrays = self.is_postgresql
        known = select(AlertRow.id).where(incidents.among(AlertRow.id, ids, array=arrays))
        seen = set(session.scalars(known))
        current = incidents.current_incidents(
            session,
            (incidents.cause_of(alert) for alert, _ in decided if alert.id not in seen),
            arrays=arrays,
        )
        rows: list[dict[str, Any]] = []  # new alert rows, inserted together
        recorded: list[Recorded] = []
        for alert, broadcast in decided:
            if alert.id in seen:
                recorded.append(Recorded(False, None, None, False))
                continue
            seen.add(alert.id)
            cause = incidents.cause_of(alert)
            incident, opened = incidents.attach_to(
                session, alert, current.get(cause), now, window=self.incident_window
            )
            if incident is not None and incidents.newer(incident, current.get(cause)):
                current[cause] = incident
            rows.append(self._alert_values(alert, now, incident.id if incident else None))
            if broadcast is not None:
                # The check reads this alarm's earlier events, those of this batch included.
                self._insert_alerts(session, rows)
                rows = []
                if self._alarm_broadcast(session, alert):
                    broadcast = None
            if broadcast is not None:
                broadcast_row = self._broadcast_row(broadcast, now)
                session.add(broadcast_row)
                broadcast_rows.add_targets(session, broadcast_row, now, self.redelivery)
            recorded.append(Recorded(True, broadcast, incident.id if incident else None, opened))
        self._insert_alerts(session, rows)
        return recorded

    @staticmethod
    def _alert_values(event: AlertEvent, now: datetime, incident_id: str | None) -> dict[str, Any]:
        return {
            "id": event.id,
            "key": event.key,
            "phase": event.phase.value,
            "severity": event.severity.value,
            "kind": event.kind,
            "rule": event.rule,
            "site": event.site,
            "gateway": event.gateway,
            "device": event.device,
            "building": event.building,
            "unit": event.unit,
            "ts": event.ts,
            "received_at": now,
            "evidence": dict(event.evidence),
            "message": event.message,
            "incident_id": incident_id,
        }

    @staticmethod
    def _insert_alerts(session: Session, rows: list[dict[str, Any]]) -> None:
        """One INSERT for many alert rows (Core, not one ORM object each)."""
        if rows:
            session.execute(insert(AlertRow), rows)

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
        # Automatic: approved by the policy, sent at once (docs/broadcast.md).
        return broadcast_rows.new_row(
            broadcast, now, origin="auto", state=broadcast_rows.APPROVED, approved_by="policy"
        )

    def unpublished_broadcasts(self, now: datetime | None = None) -> list[BroadcastRecord]:
        """Broadcasts not yet handed to the broker, oldest first; with ``now``, unexpired only."""
        # Pending (awaiting a second person) and rejected broadcasts are never published.
        query = select(BroadcastRow).where(
            BroadcastRow.published_at.is_(None), BroadcastRow.state == broadcast_rows.APPROVED
        )
        if now is not None:
            query = query.where((BroadcastRow.expires.is_(None)) | (BroadcastRow.expires > now))
        query = query.order_by(BroadcastRow.created_at, BroadcastRow.id)
        with self._reading() as session:
            return [_broadcast_record(row) for row in session.scalars(query)]

    def mark_published(self, broadcast_id: str, at: datetime) -> None:
        with self._writing() as session:
            published = session.execute(
                update(BroadcastRow)
                .where(BroadcastRow.id == broadcast_id, BroadcastRow.published_at.is_(None))
                .values(published_at=at, state=broadcast_rows.SENT)
            )
            if getattr(published, "rowcount", 0) > 0:
                # The first retry counts from the publish: one that waited for the broker
                # would otherwise be published again on the next tick.
                session.execute(
                    update(BroadcastGatewayRow)
                    .where(
                        BroadcastGatewayRow.broadcast_id == broadcast_id,
                        BroadcastGatewayRow.next_at.is_not(None),
                    )
                    .values(next_at=at + self.redelivery.first)
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
                broadcast_rows.on_receipt(session, receipt, site, gateway, now)
        except IntegrityError:
            return False
        return True

    def record_heartbeat(self, heartbeat: Heartbeat, now: datetime) -> None:
        """Upsert the gateway's state; an older heartbeat (retained, reordered) changes nothing.

        ``offline`` (the last will) starts the gateway's outage clock (``down_since``); the
        next ``online`` heartbeat ends it and clears its gateway-offline incident, if any.
        """
        self.record_heartbeats([heartbeat], now)

    def record_heartbeats(self, heartbeats: Sequence[Heartbeat], now: datetime) -> None:
        """``record_heartbeat`` for many, in one transaction (a hub hears one from every
        gateway every few seconds; one commit each bounded it at a few hundred a second)."""
        if not heartbeats:
            return
        try:
            with self._writing() as session:
                self.lock_causes(session, (f"gateway:{h.site}/{h.gateway}" for h in heartbeats))
                for heartbeat in heartbeats:
                    if self._apply_heartbeat(session, heartbeat, now):
                        session.flush()  # the gateway's next heartbeat in the batch finds it
        except IntegrityError:
            if len(heartbeats) > 1:  # another hub inserted one of these gateways: one by one
                for heartbeat in heartbeats:
                    self.record_heartbeats([heartbeat], now)
                return
            # A concurrent worker inserted this gateway first; the next heartbeat updates it.
            log.debug(
                "heartbeat of %s/%s raced another writer",
                heartbeats[0].site,
                heartbeats[0].gateway,
            )

    def _apply_heartbeat(self, session: Session, heartbeat: Heartbeat, now: datetime) -> bool:
        """Returns whether the gateway is new (a row was added)."""
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
                    building=None,
                    down_since=now if heartbeat.state == "offline" else None,
                    offline_incident=None,
                )
            )
            return True
        # The last will (offline) is made when the gateway connects, so it is older than the
        # heartbeats that follow; it still comes last, and wins.
        elif heartbeat.ts >= row.last_seen or heartbeat.state == "offline":
            row.state = heartbeat.state
            row.last_seen = max(heartbeat.ts, row.last_seen)
            row.received_at = now
            row.outbox_depth = heartbeat.outbox_depth
            row.devices_online = heartbeat.devices_online
            if heartbeat.state == "offline":
                row.down_since = row.down_since or now
            else:
                self._gateway_back(session, row, now)
        return False

    @staticmethod
    def _gateway_back(session: Session, row: GatewayRow, now: datetime) -> None:
        row.down_since = None
        if row.offline_incident is not None:
            incident = session.get(IncidentRow, row.offline_incident)
            if incident is not None:
                incidents.clear(session, incident, now, at=now, event_id=None)
            row.offline_incident = None

    def sweep_gateways(self, now: datetime) -> list[str]:
        """Open a gateway-offline incident for each gateway down (its last will, or silent for
        ``gateway_stale_after``) for longer than ``gateway_grace``. Returns the new incidents.

        Each gateway row is locked (SKIP LOCKED on PostgreSQL), so two hubs never both open one.
        """
        opened: list[str] = []
        with self._writing() as session:
            rows = session.scalars(
                self.skip_locked(select(GatewayRow).where(GatewayRow.offline_incident.is_(None)))
            )
            for row in list(rows):
                if row.state == "offline":
                    down_at = row.down_since or row.received_at
                else:
                    down_at = row.received_at + self.gateway_stale_after
                if now < down_at + self.gateway_grace:
                    continue
                incident = incidents.open_incident(
                    session,
                    now,
                    site=row.site,
                    gateway=row.gateway,
                    key=incidents.GATEWAY_OFFLINE,
                    kind=incidents.GATEWAY_OFFLINE,
                    severity="Severe",
                    building=row.building,
                    unit=None,
                    device=None,
                    message=f"gateway {row.site}/{row.gateway} offline since {down_at:%H:%M} UTC",
                    at=down_at,
                    actor=incidents.SYSTEM,
                )
                row.down_since = row.down_since or down_at
                row.offline_incident = incident.id
                opened.append(incident.id)
        return opened

    def gateway_states(self, now: datetime) -> list[GatewayState]:
        """Every gateway, with ``stale`` when it said offline or has been silent too long."""
        query = select(GatewayRow).order_by(GatewayRow.site, GatewayRow.gateway)
        with self._reading() as session:
            return [
                GatewayState(
                    site=row.site,
                    gateway=row.gateway,
                    state=row.state,
                    last_seen=row.last_seen,
                    received_at=row.received_at,
                    outbox_depth=row.outbox_depth,
                    devices_online=row.devices_online,
                    stale=row.state == "offline"
                    or now - row.received_at > self.gateway_stale_after,
                    down_since=row.down_since,
                    offline_incident=row.offline_incident,
                )
                for row in session.scalars(query)
            ]

    def set_gateway_building(self, site: str, gateway: str, building: str | None) -> None:
        with self._writing() as session:
            row = session.get(GatewayRow, (site, gateway))
            if row is not None:
                row.building = building

    def record_dead_letter(self, dead_letter: DeadLetter, now: datetime) -> None:
        """Count a gateway's rejected input by reason (with the repeats it withheld)."""
        self.record_dead_letters([dead_letter], now)

    def record_dead_letters(self, dead_letters: Sequence[DeadLetter], now: datetime) -> None:
        """``record_dead_letter`` for many, in one transaction: a misbehaving device can send
        thousands, and one commit each would hold up the alarms queued behind them."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for letter in dead_letters:
            counts[(letter.site, letter.gateway, letter.reason)] += 1 + letter.repeats
        if not counts:
            return
        for attempt in (1, 2):
            try:
                self._add_dead_letter_counts(counts, now)
                return
            except IntegrityError:
                # Another hub inserted one of these rows first; the whole batch was rolled
                # back, and a second try finds the row and adds to it.
                log.debug("dead-letter counts raced another writer (attempt %d)", attempt)
        log.warning("dead-letter counts not stored after two races: %s", dict(counts))

    def _add_dead_letter_counts(
        self, counts: Mapping[tuple[str, str, str], int], now: datetime
    ) -> None:
        with self._writing() as session:
            for key, count in sorted(counts.items()):
                # An UPDATE ... count + n is atomic on every database; insert only the first.
                result = session.execute(
                    update(DeadLetterCountRow)
                    .where(
                        DeadLetterCountRow.site == key[0],
                        DeadLetterCountRow.gateway == key[1],
                        DeadLetterCountRow.reason == key[2],
                    )
                    .values(count=DeadLetterCountRow.count + count, last_at=now)
                )
                if getattr(result, "rowcount", 0) == 0:
                    session.add(
                        DeadLetterCountRow(
                            site=key[0], gateway=key[1], reason=key[2], count=count, last_at=now
                        )
                    )
                    session.flush()

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

    # Incidents and the audit log.

    def incidents(
        self,
        scope: Scope = EVERYTHING,
        *,
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[IncidentRecord]:
        """Incidents the scope allows, newest first."""
        query = select(IncidentRow)
        where = scope.where(IncidentRow.site, IncidentRow.building, IncidentRow.unit)
        if where is not None:
            query = query.where(where)
        if state is not None:
            query = query.where(IncidentRow.state == state)
        query = (
            query.order_by(IncidentRow.opened_at.desc(), IncidentRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as session:
            return [incidents.incident_record(row) for row in session.scalars(query)]

    def incident(self, incident_id: str, scope: Scope = EVERYTHING) -> IncidentRecord | None:
        with self._reading() as session:
            row = session.get(IncidentRow, incident_id)
            if row is None or not scope.allows(row.site, row.building, row.unit):
                return None
            return incidents.incident_record(row)

    def incident_events(self, incident_id: str) -> list[AlertRecord]:
        query = (
            select(AlertRow)
            .where(AlertRow.incident_id == incident_id)
            .order_by(AlertRow.ts, AlertRow.id)
        )
        with self._reading() as session:
            return [_alert_record(row) for row in session.scalars(query)]

    def acknowledge_incident(
        self, incident_id: str, actor: str, now: datetime, scope: Scope = EVERYTHING
    ) -> IncidentRecord:
        return self._transition(
            incident_id, scope, lambda s, r: incidents.acknowledge(s, r, now, actor)
        )

    def resolve_incident(
        self,
        incident_id: str,
        actor: str,
        now: datetime,
        scope: Scope = EVERYTHING,
        note: str = "",
    ) -> IncidentRecord:
        return self._transition(
            incident_id, scope, lambda s, r: incidents.resolve(s, r, now, actor, note)
        )

    def _transition(
        self,
        incident_id: str,
        scope: Scope,
        change: Callable[[Session, IncidentRow], None],
    ) -> IncidentRecord:
        with self._writing() as session:
            row = session.get(IncidentRow, incident_id, with_for_update=not self.is_sqlite)
            if row is None or not scope.allows(row.site, row.building, row.unit):
                raise incidents.UnknownIncident(f"no incident {incident_id}")
            change(session, row)
            return incidents.incident_record(row)

    def audit(
        self,
        *,
        subject_id: str | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Audit lines, oldest first; ``after_id`` pages on (and tails the log)."""
        query = select(AuditRow).where(AuditRow.id > after_id)
        if subject_id is not None:
            query = query.where(AuditRow.subject_id == subject_id)
        query = query.order_by(AuditRow.id).limit(limit)
        with self._reading() as session:
            return [incidents.audit_record(row) for row in session.scalars(query)]

    def append_audit(
        self,
        now: datetime,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str,
        *,
        site: str | None = None,
        **detail: Any,
    ) -> None:
        with self._writing() as session:
            incidents.audit(
                session, now, actor, action, subject_type, subject_id, site=site, **detail
            )

    def alerts_in(self, scope: Scope, limit: int = 100, offset: int = 0) -> list[AlertRecord]:
        """Alert events the scope allows, newest first."""
        query = select(AlertRow)
        where = scope.where(AlertRow.site, AlertRow.building, AlertRow.unit)
        if where is not None:
            query = query.where(where)
        query = query.order_by(AlertRow.ts.desc(), AlertRow.id.desc()).limit(limit).offset(offset)
        with self._reading() as session:
            return [_alert_record(row) for row in session.scalars(query)]

    # Places and people.

    def add_resident(self, name: str, site: str, building: str, unit: str) -> int:
        with self._writing() as session:
            return directory.add_resident(session, name, site, building, unit)

    def add_device(
        self,
        site: str,
        gateway: str,
        device: str,
        kind: str,
        *,
        building: str | None = None,
        unit: str | None = None,
    ) -> None:
        with self._writing() as session:
            row = None
            if building is not None and unit is not None:
                row = directory.ensure_unit(session, site, building, unit)
            directory.add_device(session, site, gateway, device, kind, row)

    def add_person(
        self,
        username: str,
        name: str,
        role: str,
        *,
        password_hash: str | None = None,
        email: str | None = None,
        phone: str | None = None,
    ) -> int:
        try:
            with self._writing() as session:
                return directory.add_person(
                    session,
                    username,
                    name,
                    role,
                    password_hash=password_hash,
                    email=email,
                    phone=phone,
                )
        except IntegrityError as exc:
            raise directory.DirectoryError(f"there is already a person {username!r}") from exc

    def link_family(self, person_id: int, resident_id: int) -> None:
        with self._writing() as session:
            directory.link_family(session, person_id, resident_id)

    def person_login(self, username: str) -> tuple[PersonRecord, str | None] | None:
        """A person and their password hash, by username (None: no such active person)."""
        with self._reading() as session:
            row = session.scalar(select(PersonRow).where(PersonRow.username == username))
            if row is None or not row.active:
                return None
            return directory.person_record(row), row.password_hash

    def person(self, person_id: int) -> PersonRecord | None:
        with self._reading() as session:
            row = session.get(PersonRow, person_id)
            return None if row is None else directory.person_record(row)

    def set_password_hash(self, person_id: int, password_hash: str) -> None:
        with self._writing() as session:
            row = session.get(PersonRow, person_id)
            if row is not None:
                row.password_hash = password_hash

    def people(self, role: str | None = None) -> list[PersonRecord]:
        query = select(PersonRow).order_by(PersonRow.id)
        if role is not None:
            query = query.where(PersonRow.role == role)
        with self._reading() as session:
            return [directory.person_record(row) for row in session.scalars(query)]

    def count_people(self) -> int:
        with self._reading() as session:
            return session.scalar(select(func.count()).select_from(PersonRow)) or 0

    def scope_of(self, person_id: int, role: str) -> Scope:
        with self._reading() as session:
            return directory.scope_of(session, person_id, role)

    def residents(self, scope: Scope = EVERYTHING) -> list[ResidentRecord]:
        with self._reading() as session:
            return directory.residents(session, scope)

    def latest_audit_id(self) -> int:
        with self._reading() as session:
            return session.scalar(select(func.max(AuditRow.id))) or 0
