"""Broadcast rows inside a transaction: targets, receipts that confirm them, coverage, redelivery.

Plain functions on a ``Session`` (``Store`` and ``hub.broadcasting`` wrap them), with no
import of ``hub.store``, so the store can call them in its own transactions.

How the hub knows which speakers a broadcast is meant for (its *target set*), fixed when the
broadcast is approved:

1. speakers in the directory (``devices`` of kind ``speaker``) of the site, in a targeted
   building (by their unit, or by their gateway's building, learned from its receipts);
2. a speaker that answers a broadcast without being in its set joins it (``known_from``
   "receipt"): it was reached, so it is part of the area; and it joins the directory, so
   the next broadcast targets it from the start.

An Update or Cancel gets the target set of the broadcast it replaces.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.tables import (
    BroadcastGatewayRow,
    BroadcastRow,
    BroadcastTargetRow,
    DeviceRow,
    GatewayRow,
    UnitRow,
)
from wire import Broadcast, Codec, Receipt, cap

SPEAKER = "speaker"
PENDING, APPROVED, SENT, REJECTED = "pending", "approved", "sent", "rejected"
_codec = Codec()


@dataclass(frozen=True, slots=True)
class Redelivery:
    """Redelivery policy: first retry after ``first``, doubling up to ``longest``, at most
    ``attempts`` retries per gateway (a gateway back from an outage gets a fresh budget)."""

    first: timedelta = timedelta(seconds=5)
    longest: timedelta = timedelta(seconds=60)
    attempts: int = 8
    stale_after: timedelta = timedelta(minutes=3)

    def after(self, attempts: int) -> timedelta:
        later: timedelta = self.first * (2 ** max(0, attempts))
        return min(later, self.longest)


def new_row(
    broadcast: Broadcast,
    now: datetime,
    *,
    origin: str,
    state: str,
    scope: str = "Public",
    proposed_by: str | None = None,
    approved_by: str | None = None,
    override_reason: str | None = None,
    refers_to: str | None = None,
    spec: dict[str, Any] | None = None,
) -> BroadcastRow:
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
        payload=_codec.encode(broadcast).decode("utf-8"),
        status=broadcast.status,
        msg_type=broadcast.msg_type,
        refers_to=refers_to,
        state=state,
        origin=origin,
        scope=scope,
        repeat=broadcast.repeat,
        proposed_by=proposed_by,
        approved_by=approved_by,
        approved_at=now if state == APPROVED and approved_by is not None else None,
        override_reason=override_reason,
        superseded_by=None,
        content_hash=cap.content_hash(broadcast),
        spec=spec,
        cap_xml=broadcast.cap,
    )


def wire_broadcast(row: BroadcastRow) -> Broadcast:
    return _codec.decode(row.payload.encode("utf-8"), Broadcast, row.created_at, check_time=False)


def _in_area(building: str | None, buildings: set[str]) -> bool:
    return not buildings or (building is not None and building in buildings)


def candidate_speakers(
    session: Session, site: str, buildings: list[str]
) -> dict[tuple[str, str], tuple[str | None, str]]:
    """(gateway, speaker) -> (building, known_from) for the speakers of an area."""
    wanted = set(buildings)
    gateway_building = {
        row.gateway: row.building
        for row in session.scalars(select(GatewayRow).where(GatewayRow.site == site))
    }
    found: dict[tuple[str, str], tuple[str | None, str]] = {}
    devices = session.execute(
        select(DeviceRow, UnitRow.building)
        .outerjoin(UnitRow, UnitRow.id == DeviceRow.unit_id)
        .where(DeviceRow.site == site, DeviceRow.kind == SPEAKER)
    )
    for device, unit_building in devices:
        building = unit_building or gateway_building.get(device.gateway)
        if _in_area(building, wanted):
            found[(device.gateway, device.device)] = (building, "directory")
    return found


def add_targets(session: Session, row: BroadcastRow, now: datetime, policy: Redelivery) -> int:
    """Fix the target set of an approved broadcast, and set its redelivery clocks (set again
    from its publish by Store.mark_published)."""
    session.flush()
    if row.refers_to is not None:
        earlier = session.scalars(
            select(BroadcastTargetRow).where(BroadcastTargetRow.broadcast_id == row.refers_to)
        )
        targets = {(t.gateway, t.speaker): (t.building, t.known_from) for t in earlier}
    else:
        targets = candidate_speakers(session, row.site, list(row.buildings))
    if targets:
        # One multi-row INSERT: a whole-site warning targets a thousand speakers.
        session.execute(
            insert(cast(Table, BroadcastTargetRow.__table__)),
            [
                {
                    "broadcast_id": row.id,
                    "site": row.site,
                    "gateway": gateway,
                    "speaker": speaker,
                    "building": building,
                    "known_from": known_from,
                    "confirmed_at": None,
                    "failed": None,
                }
                for (gateway, speaker), (building, known_from) in targets.items()
            ],
        )
    for gateway in sorted({g for g, _ in targets}):
        _add_gateway(session, row, gateway, now, policy)
    return len(targets)


def _add_gateway(
    session: Session, row: BroadcastRow, gateway: str, now: datetime, policy: Redelivery
) -> None:
    state = session.get(GatewayRow, (row.site, gateway))
    session.add(
        BroadcastGatewayRow(
            broadcast_id=row.id,
            site=row.site,
            gateway=gateway,
            attempts=0,
            next_at=now + policy.first,
            last_published_at=None,
            saw_down=False,
            devices_online=state.devices_online if state is not None else 0,
        )
    )


def on_receipt(session: Session, receipt: Receipt, site: str, gateway: str, now: datetime) -> None:
    """A receipt confirms its speaker when it says ``played`` with the right content hash.

    On every receipt's path, so plain statements rather than loaded objects: one read of the
    broadcast's hash and one UPDATE in the usual case.
    """
    # Core statements on the tables: the ORM's bulk-update bookkeeping costs more than the SQL.
    gateways, targets, broadcasts = (
        cast(Table, GatewayRow.__table__),
        cast(Table, BroadcastTargetRow.__table__),
        cast(Table, BroadcastRow.__table__),
    )
    if receipt.building is not None:  # how the hub learns where a gateway is
        session.execute(
            update(gateways)
            .where(
                gateways.c.site == site,
                gateways.c.gateway == gateway,
                gateways.c.building.is_(None),
            )
            .values(building=receipt.building)
        )
    expected = session.execute(
        select(broadcasts.c.content_hash).where(broadcasts.c.id == receipt.broadcast_id)
    ).first()
    if expected is None:
        return  # a broadcast this hub does not know (another hub's, a reset database)
    confirms = receipt.outcome == "played" and receipt.content_hash == expected[0]
    if confirms:
        done = session.execute(
            update(targets)
            .where(
                targets.c.broadcast_id == receipt.broadcast_id,
                targets.c.site == site,
                targets.c.gateway == gateway,
                targets.c.speaker == receipt.speaker,
                targets.c.confirmed_at.is_(None),
            )
            .values(confirmed_at=now, failed=None)
        )
        if getattr(done, "rowcount", 0) > 0:
            return
    target = session.get(BroadcastTargetRow, (receipt.broadcast_id, site, gateway, receipt.speaker))
    if target is None:
        if session.get(DeviceRow, (site, gateway, receipt.speaker)) is None:
            # A speaker heard from joins the directory, so the next broadcast targets it. In a
            # savepoint: another hub adding it at the same moment must not cost this receipt.
            with contextlib.suppress(IntegrityError), session.begin_nested():
                session.add(
                    DeviceRow(
                        site=site,
                        gateway=gateway,
                        device=receipt.speaker,
                        kind=SPEAKER,
                        unit_id=None,
                    )
                )
        target = BroadcastTargetRow(
            broadcast_id=receipt.broadcast_id,
            site=site,
            gateway=gateway,
            speaker=receipt.speaker,
            building=receipt.building,
            known_from="receipt",
            confirmed_at=None,
            failed=None,
        )
        session.add(target)
        if session.get(BroadcastGatewayRow, (receipt.broadcast_id, site, gateway)) is None:
            row = session.get(BroadcastRow, receipt.broadcast_id)
            if row is not None:
                _add_gateway(session, row, gateway, now, Redelivery())
    if target.confirmed_at is not None:
        return
    if confirms:
        target.confirmed_at = now
        target.failed = None
    elif receipt.outcome == "played":
        target.failed = "played other words (content hash differs)"
    else:
        target.failed = receipt.detail[:256] or "failed"


@dataclass(frozen=True, slots=True)
class SpeakerCoverage:
    speaker: str
    gateway: str
    building: str | None
    known_from: str
    confirmed_at: datetime | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class GatewayDelivery:
    gateway: str
    attempts: int
    next_at: datetime | None
    last_published_at: datetime | None
    saw_down: bool


@dataclass(frozen=True, slots=True)
class Coverage:
    broadcast_id: str
    state: str
    targeted: int
    confirmed: int
    speakers: tuple[SpeakerCoverage, ...]
    gateways: tuple[GatewayDelivery, ...]

    @property
    def missing(self) -> tuple[SpeakerCoverage, ...]:
        return tuple(s for s in self.speakers if s.confirmed_at is None)

    @property
    def percent(self) -> float:
        return 100.0 if self.targeted == 0 else round(100.0 * self.confirmed / self.targeted, 1)


def coverage(session: Session, row: BroadcastRow) -> Coverage:
    targets = session.scalars(
        select(BroadcastTargetRow)
        .where(BroadcastTargetRow.broadcast_id == row.id)
        .order_by(BroadcastTargetRow.gateway, BroadcastTargetRow.speaker)
    )
    speakers = tuple(
        SpeakerCoverage(t.speaker, t.gateway, t.building, t.known_from, t.confirmed_at, t.failed)
        for t in targets
    )
    gateways = tuple(
        GatewayDelivery(g.gateway, g.attempts, g.next_at, g.last_published_at, g.saw_down)
        for g in session.scalars(
            select(BroadcastGatewayRow)
            .where(BroadcastGatewayRow.broadcast_id == row.id)
            .order_by(BroadcastGatewayRow.gateway)
        )
    )
    confirmed = sum(1 for s in speakers if s.confirmed_at is not None)
    return Coverage(row.id, row.state, len(speakers), confirmed, speakers, gateways)


def stop_redelivery(session: Session, broadcast_id: str) -> None:
    for g in session.scalars(
        select(BroadcastGatewayRow).where(BroadcastGatewayRow.broadcast_id == broadcast_id)
    ):
        g.next_at = None


@dataclass(frozen=True, slots=True)
class Due:
    """A broadcast to publish again, and why, for which gateways."""

    broadcast_id: str
    site: str
    payload: bytes
    gateways: tuple[tuple[str, str], ...]  # (gateway, reason: retry, back, devices)


def due_redeliveries(
    session: Session, now: datetime, policy: Redelivery, *, lock: Any = None
) -> list[Due]:
    """Decide (and record) which broadcasts to publish again now.

    Per gateway with unconfirmed speakers, while the broadcast is valid (sent, unexpired, not
    replaced by an Update or Cancel): when it comes back from an outage (offline or stale seen
    since the last publish; a fresh retry budget), when more of its devices are online than at
    the last publish, or when its retry is due (bounded, with backoff). ``lock`` (the store's
    ``skip_locked``) lets several hubs share the work.
    """
    query = select(BroadcastGatewayRow).where(BroadcastGatewayRow.next_at.is_not(None))
    rows = list(session.scalars(lock(query) if lock is not None else query))
    due: dict[str, list[tuple[str, str]]] = {}
    broadcasts: dict[str, BroadcastRow | None] = {}
    for g in rows:
        if g.broadcast_id not in broadcasts:
            broadcasts[g.broadcast_id] = session.get(BroadcastRow, g.broadcast_id)
        b = broadcasts[g.broadcast_id]
        if (
            b is not None
            and b.state == APPROVED
            and b.superseded_by is None
            and (b.expires is None or b.expires > now)
        ):
            # Not published yet (the hub publishes it next, or on reconnect): its retries
            # start from the publish (Store.mark_published), not stopped for good here.
            continue
        if (
            b is None
            or b.state != SENT
            or b.superseded_by is not None
            or (b.expires is not None and b.expires <= now)
        ):
            g.next_at = None
            continue
        missing = session.scalar(
            select(BroadcastTargetRow.speaker)
            .where(
                BroadcastTargetRow.broadcast_id == b.id,
                BroadcastTargetRow.site == g.site,
                BroadcastTargetRow.gateway == g.gateway,
                BroadcastTargetRow.confirmed_at.is_(None),
            )
            .limit(1)
        )
        if missing is None:
            g.next_at = None  # every speaker behind this gateway confirmed
            continue
        state = session.get(GatewayRow, (g.site, g.gateway))
        down = (
            state is None
            or state.state == "offline"
            or now - state.received_at > (policy.stale_after)
        )
        if down:
            g.saw_down = True  # publishing into an outage is pointless; wait for its return
            continue
        assert state is not None
        reason = None
        if g.saw_down:
            reason, g.attempts = "back", 0
        elif state.devices_online > g.devices_online:
            reason = "devices"
        elif g.attempts < policy.attempts and g.next_at is not None and now >= g.next_at:
            reason, g.attempts = "retry", g.attempts + 1
        if reason is None:
            if g.attempts >= policy.attempts and b.expires is not None:
                g.next_at = b.expires  # out of retries; still watched for a return
            continue
        g.saw_down = False
        g.devices_online = state.devices_online
        g.last_published_at = now
        g.next_at = now + policy.after(g.attempts)
        due.setdefault(b.id, []).append((g.gateway, reason))
    out = []
    for broadcast_id, gateways in due.items():
        b = broadcasts[broadcast_id]
        assert b is not None
        out.append(Due(b.id, b.site, b.payload.encode("utf-8"), tuple(gateways)))
    return out
