"""Escalation and delivery: who is told about an incident, and the record of each notice.

Escalation: an open incident's ``next_escalation_at`` is its timer. When it is due, the hub
that locks the row (``FOR UPDATE SKIP LOCKED``) moves the incident to its route's next tier
and queues one delivery per person and channel of that tier, in the same transaction; the
next tier's timer is set from the gap between the tiers' ``after_minutes``. Acknowledging or
resolving clears the timer, so escalation stops.

Delivery: due deliveries are claimed (status ``sending`` with a lease, SKIP LOCKED), sent
outside any transaction, then marked ``sent``, ``retrying`` (with backoff) or ``failed``; a
failed delivery with a fallback channel queues the fallback. A unique constraint on
(incident, notice, person, channel) makes each notice one row, whoever decides it. A hub that
dies between sending and marking leaves a lease that expires, and the notice is sent again:
delivery is at least once, and once in every case where the hub lives to record it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub import directory, incidents
from hub.channels import Channel, ChannelError, Notice, make_channel
from hub.clock import Clock, utc_now
from hub.directory import PersonRecord
from hub.routing import EMPTY_POLICY, RoutingPolicy, Tier, load_policy
from hub.settings import HubSettings
from hub.store import Store
from hub.tables import DeliveryRow, IncidentRow, PersonRow

log = logging.getLogger(__name__)

QUEUED, SENDING, SENT, RETRYING, FAILED = "queued", "sending", "sent", "retrying", "failed"
LEASE = timedelta(minutes=2)
BATCH = 100


class Notifier:
    def __init__(
        self,
        store: Store,
        policy: RoutingPolicy,
        *,
        channels: dict[str, Channel] | None = None,
        clock: Clock = utc_now,
        concurrency: int = 16,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.channels: dict[str, Channel] = (
            channels
            if channels is not None
            else {name: make_channel(config) for name, config in policy.channels.items()}
        )
        self.counters: Counter[str] = Counter()
        self._limit = asyncio.Semaphore(concurrency)

    @classmethod
    def from_settings(cls, store: Store, settings: HubSettings, *, clock: Clock) -> Notifier:
        policy = (
            load_policy(settings.routing_policy)
            if settings.routing_policy is not None
            else EMPTY_POLICY
        )
        return cls(store, policy, clock=clock)

    async def tick(self, now: datetime | None = None) -> None:
        """Fire due escalations, then send due deliveries (raises ``StoreError``)."""
        now = now or self.clock()
        while await asyncio.to_thread(self.escalate, now) == BATCH:
            pass
        while await self.deliver(now) == BATCH:
            pass

    # Escalation.

    def escalate(self, now: datetime) -> int:
        """Move every due open incident to its next tier; returns how many were due."""
        with self.store.writing() as session:
            due = list(
                session.scalars(
                    self.store.skip_locked(
                        select(IncidentRow)
                        .where(
                            IncidentRow.state == incidents.OPEN,
                            IncidentRow.next_escalation_at <= now,
                        )
                        .order_by(IncidentRow.next_escalation_at)
                        .limit(BATCH)
                    )
                )
            )
            for incident in due:
                self._escalate_one(session, incident, now)
        return len(due)

    def _escalate_one(self, session: Session, incident: IncidentRow, now: datetime) -> None:
        route = self.policy.route_for(incident.kind, incident.severity)
        tier_index = incident.tier + 1
        if route is None or tier_index >= len(route.tiers):
            incident.next_escalation_at = None  # nobody (more) to tell
            return
        tier = route.tiers[tier_index]
        queued = self._queue_tier(session, incident, tier, f"tier:{tier_index}", now)
        incident.tier = tier_index
        following = tier_index + 1
        incident.next_escalation_at = (
            now + (route.tiers[following].after - tier.after)
            if following < len(route.tiers)
            else None
        )
        incident.updated_at = now
        incidents.audit(
            session,
            now,
            incidents.SYSTEM,
            "incident.notified" if tier_index == 0 else "incident.escalated",
            "incident",
            incident.id,
            site=incident.site,
            route=route.name,
            tier=tier_index,
            deliveries=queued,
        )
        self.counters["tiers_fired"] += 1

    def _recipients(self, session: Session, incident: IncidentRow, tier: Tier) -> list[int]:
        ids: set[int] = set()
        for role in tier.roles:
            if role == directory.FAMILY:
                ids.update(
                    directory.family_of(session, incident.site, incident.building, incident.unit)
                )
            else:
                ids.update(
                    session.scalars(
                        select(PersonRow.id).where(PersonRow.role == role, PersonRow.active)
                    )
                )
        if tier.people:
            ids.update(
                session.scalars(
                    select(PersonRow.id).where(
                        PersonRow.username.in_(tier.people), PersonRow.active
                    )
                )
            )
        return sorted(ids)

    def _queue_tier(
        self, session: Session, incident: IncidentRow, tier: Tier, notice: str, now: datetime
    ) -> int:
        send_at = self.policy.hold_until(incident.kind, incident.severity, now)
        count = 0
        for person_id in self._recipients(session, incident, tier):
            for channel in tier.channels:
                session.add(
                    DeliveryRow(
                        incident_id=incident.id,
                        notice=notice,
                        person_id=person_id,
                        channel=channel,
                        fallback=tier.fallback if tier.fallback != channel else None,
                        status=QUEUED,
                        attempts=0,
                        next_attempt_at=send_at,
                        lease_until=None,
                        last_error=None,
                        created_at=now,
                        sent_at=None,
                    )
                )
                count += 1
        return count

    # Delivery.

    def _claim(self, now: datetime) -> list[tuple[int, str, str, PersonRecord, IncidentRow]]:
        with self.store.writing() as session:
            rows = list(
                session.scalars(
                    self.store.skip_locked(
                        select(DeliveryRow)
                        .where(
                            or_(
                                and_(
                                    DeliveryRow.status.in_((QUEUED, RETRYING)),
                                    DeliveryRow.next_attempt_at <= now,
                                ),
                                and_(DeliveryRow.status == SENDING, DeliveryRow.lease_until <= now),
                            )
                        )
                        .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id)
                        .limit(BATCH)
                    )
                )
            )
            claimed = []
            for row in rows:
                row.status = SENDING
                row.lease_until = now + LEASE
                row.attempts += 1
                person = session.get(PersonRow, row.person_id)
                incident = session.get(IncidentRow, row.incident_id)
                if person is None or incident is None:
                    row.status = FAILED
                    row.last_error = "the person or incident no longer exists"
                    continue
                session.expunge(incident)
                claimed.append(
                    (row.id, row.channel, row.notice, directory.person_record(person), incident)
                )
            return claimed

    async def deliver(self, now: datetime) -> int:
        """Send every due delivery once; returns how many were claimed."""
        claimed = await asyncio.to_thread(self._claim, now)
        if claimed:
            await asyncio.gather(*(self._send_one(now, *item) for item in claimed))
        return len(claimed)

    async def _send_one(
        self,
        now: datetime,
        delivery_id: int,
        channel_name: str,
        notice_name: str,
        person: PersonRecord,
        incident: IncidentRow,
    ) -> None:
        channel = self.channels.get(channel_name)
        error: str | None = None
        if channel is None:
            error = f"no channel {channel_name!r} in the routing policy"
        else:
            notice = compose(delivery_id, notice_name, incident)
            async with self._limit:
                try:
                    await channel.send(notice, person)
                except ChannelError as exc:
                    error = str(exc)[:500]
                except Exception as exc:
                    log.exception("channel %s failed unexpectedly", channel_name)
                    error = f"unexpected: {exc!r}"[:500]
        await asyncio.to_thread(self._record, delivery_id, error, now)

    def _record(self, delivery_id: int, error: str | None, now: datetime) -> None:
        with self.store.writing() as session:
            row = session.get(DeliveryRow, delivery_id)
            if row is None:
                return
            row.lease_until = None
            if error is None:
                row.status = SENT
                row.sent_at = self.clock()
                row.last_error = None
                self.counters["sent"] += 1
                return
            row.last_error = error
            if row.attempts <= self.policy.retries:
                row.status = RETRYING
                row.next_attempt_at = now + self.policy.retry_after * (2 ** (row.attempts - 1))
                self.counters["retrying"] += 1
                return
            row.status = FAILED
            self.counters["failed"] += 1
            log.warning("delivery %s via %s failed for good: %s", row.id, row.channel, error)
            if row.fallback is not None:
                try:
                    with session.begin_nested():
                        session.add(
                            DeliveryRow(
                                incident_id=row.incident_id,
                                notice=f"{row.notice}>fallback",
                                person_id=row.person_id,
                                channel=row.fallback,
                                fallback=None,
                                status=QUEUED,
                                attempts=0,
                                next_attempt_at=now,
                                lease_until=None,
                                last_error=None,
                                created_at=now,
                                sent_at=None,
                            )
                        )
                except IntegrityError:
                    pass  # the fallback is already queued

    def deliveries(self, incident_id: str | None = None) -> list[DeliveryRecord]:
        query = select(DeliveryRow).order_by(DeliveryRow.id)
        if incident_id is not None:
            query = query.where(DeliveryRow.incident_id == incident_id)
        with self.store.reading() as session:
            return [DeliveryRecord.of(row) for row in session.scalars(query)]

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()


class DeliveryRecord:
    __slots__ = (
        "attempts",
        "channel",
        "id",
        "incident_id",
        "last_error",
        "next_attempt_at",
        "notice",
        "person_id",
        "sent_at",
        "status",
    )

    def __init__(self, row: DeliveryRow) -> None:
        self.id = row.id
        self.incident_id = row.incident_id
        self.notice = row.notice
        self.person_id = row.person_id
        self.channel = row.channel
        self.status = row.status
        self.attempts = row.attempts
        self.last_error = row.last_error
        self.next_attempt_at = row.next_attempt_at
        self.sent_at = row.sent_at

    @classmethod
    def of(cls, row: DeliveryRow) -> DeliveryRecord:
        return cls(row)

    def __repr__(self) -> str:
        return (
            f"Delivery({self.id}, {self.notice}, person={self.person_id}, {self.channel}, "
            f"{self.status}, attempts={self.attempts})"
        )


def compose(delivery_id: int, notice: str, incident: IncidentRow) -> Notice:
    record = incidents.incident_record(incident)
    place = "/".join(p for p in (record.site, record.building, record.unit) if p)
    subject = f"[Anmin] {record.severity} {record.kind} at {place}"
    escalated = "" if notice.startswith("tier:0") else " (not yet acknowledged: escalated)"
    body = (
        f"{record.message or record.kind}{escalated}\n\n"
        f"Place: {place}\nGateway: {record.gateway}\nDevice: {record.device or '-'}\n"
        f"Opened: {record.opened_at.isoformat()}\nState: {record.state}\n"
        f"Incident: {record.id}\n"
    )
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(record).items()}
    return Notice(
        delivery_id=delivery_id,
        incident_id=record.id,
        notice=notice,
        subject=subject,
        body=body,
        incident=data,
    )
