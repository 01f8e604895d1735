"""Incidents: the alert events of one cause, and what people did about them.

Same cause means the same site, gateway and alert key. An event joins the newest unresolved
incident of its cause when it comes within ``window`` of that incident's last event; otherwise
it opens a new incident. States go open -> acknowledged -> resolved (an admin or staff member
may resolve an open incident directly).

A *cleared* event does not make people's work disappear. It marks the incident cleared
(``cleared_at``); an acknowledged incident is then resolved by the system, because someone
already knows and the cause is gone. An open (unacknowledged) incident stays open and keeps
escalating: a leak that stopped on its own, or a fall alarm that was reset, still needs a
person to have looked. A later raise of the same cause within the window un-clears it.

Every change people or the system make is written to the append-only audit log in the same
transaction as the change.

These functions work inside the caller's transaction (``Session``); ``hub.store.Store`` owns
transactions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    and_,
    any_,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from hub.errors import HubError
from hub.tables import AlertRow, AuditRow, IncidentRow
from wire import AlertEvent, Phase, Severity, uuid7

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
STATES = (OPEN, ACKNOWLEDGED, RESOLVED)
SYSTEM = "system"
GATEWAY_OFFLINE = "gateway_offline"

DEFAULT_WINDOW = timedelta(minutes=30)

SEVERITY_RANK = {
    Severity.UNKNOWN.value: 0,
    Severity.MINOR.value: 1,
    Severity.MODERATE.value: 2,
    Severity.SEVERE.value: 3,
    Severity.EXTREME.value: 4,
}


class IncidentStateError(HubError):
    """The incident cannot make that transition (for example: acknowledge a resolved one)."""


class UnknownIncident(HubError):
    """No incident with that id (or none the caller may see)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller may read: everything, or only these (site, building, unit) places."""

    units: frozenset[tuple[str, str, str]] | None = None

    @property
    def everything(self) -> bool:
        return self.units is None

    def allows(self, site: str, building: str | None, unit: str | None) -> bool:
        return self.units is None or (site, building or "", unit or "") in self.units

    def where(self, site: Any, building: Any, unit: Any) -> ColumnElement[bool] | None:
        """A SQL condition on (site, building, unit) columns; None when everything is allowed."""
        if self.units is None:
            return None
        if not self.units:
            return false()
        return or_(*(and_(site == s, building == b, unit == u) for s, b, u in sorted(self.units)))


EVERYTHING = Scope()


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    id: str
    site: str
    gateway: str
    key: str
    kind: str
    severity: str
    building: str | None
    unit: str | None
    device: str | None
    message: str
    state: str
    opened_at: datetime
    last_event_at: datetime
    event_count: int
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    tier: int
    next_escalation_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    site: str | None
    detail: dict[str, Any]


def incident_record(row: IncidentRow) -> IncidentRecord:
    return IncidentRecord(
        id=row.id,
        site=row.site,
        gateway=row.gateway,
        key=row.key,
        kind=row.kind,
        severity=row.severity,
        building=row.building,
        unit=row.unit,
        device=row.device,
        message=row.message,
        state=row.state,
        opened_at=row.opened_at,
        last_event_at=row.last_event_at,
        event_count=row.event_count,
        cleared_at=row.cleared_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        tier=row.tier,
        next_escalation_at=row.next_escalation_at,
        updated_at=row.updated_at,
    )


def audit_record(row: AuditRow) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject_type=row.subject_type,
        subject_id=row.subject_id,
        site=row.site,
        detail=dict(row.detail),
    )


def audit(
    session: Session,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    site: str | None = None,
    **detail: Any,
) -> None:
    """Append one line to the audit log (inside the caller's transaction)."""
    session.add(
        AuditRow(
            at=at,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            site=site,
            detail=detail,
        )
    )


def _new_id(now: datetime) -> str:
    return uuid7(int(now.timestamp() * 1000))


def higher(a: str, b: str) -> str:
    return a if SEVERITY_RANK.get(a, 0) >= SEVERITY_RANK.get(b, 0) else b


# What one incident is about: (site, gateway, alert key).
Cause = tuple[str, str, str]


def cause_of(event: AlertEvent) -> Cause:
    return (event.site, event.gateway, event.key)


def _current(
    session: Session, site: str, gateway: str, key: str, *, for_update: bool
) -> IncidentRow | None:
    query = (
        select(IncidentRow)
        .where(
            IncidentRow.site == site,
            IncidentRow.gateway == gateway,
            IncidentRow.key == key,
        )
        .order_by(IncidentRow.opened_at.desc(), IncidentRow.id.desc())
        .limit(1)
    )
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def among(
    column: InstrumentedAttribute[str], values: Sequence[str], *, array: bool
) -> ColumnElement[bool]:
    """``column IN values``; with ``array`` (PostgreSQL) ``column = ANY(:values)``, whose text
    is the same however many values there are.

    An ``IN (...)`` list is a new statement for every batch size: psycopg parses it again in
    Python each time (it caches statements of up to 50 parameters only; about 2 ms for a batch
    of 128) and PostgreSQL plans it again. SQLite has no arrays, and no such cost.
    """
    if array:
        return column == any_(literal(list(values), ARRAY(String)))
    return column.in_(list(values))


def current_incidents(
    session: Session, causes: Iterable[Cause], *, arrays: bool = False
) -> dict[Cause, IncidentRow]:
    """The newest incident (any state) of each cause, in ONE query: what ``attach`` would find
    for each, for a whole batch of events. Causes without an incident are absent. ``arrays``
    (PostgreSQL) passes the causes as three arrays, not three parameters each (see ``among``).
    """
    wanted = sorted(set(causes))
    if not wanted:
        return {}
    cause = tuple_(IncidentRow.site, IncidentRow.gateway, IncidentRow.key)
    if arrays:
        sites, gateways, keys = ([c[n] for c in wanted] for n in range(3))
        # unnest side by side in a select list: the arrays zipped into (site, gateway, key) rows.
        listed = select(*(func.unnest(literal(a, ARRAY(String))) for a in (sites, gateways, keys)))
        where = cause.in_(listed)
    else:
        where = cause.in_(wanted)
    newest = (
        select(
            IncidentRow.id,
            func.row_number()
            .over(
                partition_by=(IncidentRow.site, IncidentRow.gateway, IncidentRow.key),
                order_by=(IncidentRow.opened_at.desc(), IncidentRow.id.desc()),
            )
            .label("rank"),
        )
        .where(where)
        .subquery()
    )
    query = (
        select(IncidentRow).join(newest, newest.c.id == IncidentRow.id).where(newest.c.rank == 1)
    )
    return {(row.site, row.gateway, row.key): row for row in session.scalars(query)}


def newer(a: IncidentRow, b: IncidentRow | None) -> bool:
    """Is ``a`` newer than ``b`` in ``attach``'s order (opened_at, then id)?"""
    return b is None or (a.opened_at, a.id) > (b.opened_at, b.id)


def attach(
    session: Session,
    event: AlertEvent,
    row: AlertRow,
    now: datetime,
    *,
    window: timedelta = DEFAULT_WINDOW,
    for_update: bool = False,
) -> tuple[IncidentRow | None, bool]:
    """Put a newly stored event into its incident. Returns (the incident, opened just now?).

    The caller holds the cause's lock (see ``Store.record_alert``), so two hubs never open two
    incidents for one cause. A clear with no incident to clear belongs to none.
    """
    current = _current(session, event.site, event.gateway, event.key, for_update=for_update)
    incident, opened = attach_to(session, event, current, now, window=window)
    row.incident_id = incident.id if incident is not None else None
    return incident, opened


def attach_to(
    session: Session,
    event: AlertEvent,
    current: IncidentRow | None,
    now: datetime,
    *,
    window: timedelta = DEFAULT_WINDOW,
) -> tuple[IncidentRow | None, bool]:
    """``attach`` with the cause's newest incident already found (``current_incidents``): no
    query, so a batch of events costs one look-up, not one per event. The caller records the
    event's incident (the returned one) on its alert row."""
    if current is not None and event.ts <= current.last_event_at + window:
        if current.state == RESOLVED and event.phase is not Phase.CLEARED:
            current = None  # a new raise after a resolution is a new incident
    elif current is not None:
        current = None
    if current is None:
        if event.phase is Phase.CLEARED:
            return None, False
        incident = open_incident(
            session,
            now,
            site=event.site,
            gateway=event.gateway,
            key=event.key,
            kind=event.kind,
            severity=event.severity.value,
            building=event.building,
            unit=event.unit,
            device=event.device,
            message=event.message,
            at=event.ts,
            actor=f"gateway:{event.site}/{event.gateway}",
            event_id=event.id,
        )
        return incident, True
    latest = current.last_event_at
    current.event_count += 1
    current.last_event_at = max(latest, event.ts)
    current.updated_at = now
    if event.phase is Phase.CLEARED:
        if event.ts < latest:
            # A clear older than an event already here (a replay that arrived late): the
            # alarm was raised again after it, so it stands. Only clears are judged by time:
            # a late raise still opens or keeps the incident (a gateway clock stepped back
            # must never hide an alarm).
            audit(session, now, SYSTEM, "incident.late_clear_ignored", "incident", current.id,
                  site=current.site, event=event.id)  # fmt: skip
            return current, False
        clear(session, current, now, at=event.ts, event_id=event.id)
        return current, False
    if current.state == RESOLVED:
        return current, False
    severity = higher(current.severity, event.severity.value)
    if severity != current.severity:
        audit(
            session,
            now,
            SYSTEM,
            "incident.severity",
            "incident",
            current.id,
            site=current.site,
            before=current.severity,
            after=severity,
            event=event.id,
        )
        current.severity = severity
    if event.message:
        current.message = event.message
    if current.cleared_at is not None:
        current.cleared_at = None
        audit(session, now, SYSTEM, "incident.raised_again", "incident", current.id,
              site=current.site, event=event.id)  # fmt: skip
    return current, False


def open_incident(
    session: Session,
    now: datetime,
    *,
    site: str,
    gateway: str,
    key: str,
    kind: str,
    severity: str,
    building: str | None,
    unit: str | None,
    device: str | None,
    message: str,
    at: datetime,
    actor: str,
    event_id: str | None = None,
) -> IncidentRow:
    """A new open incident, due for its first notification at once (tier -1 -> 0)."""
    incident = IncidentRow(
        id=_new_id(now),
        site=site,
        gateway=gateway,
        key=key,
        kind=kind,
        severity=severity,
        building=building,
        unit=unit,
        device=device,
        message=message,
        state=OPEN,
        opened_at=at,
        last_event_at=at,
        event_count=1 if event_id else 0,
        cleared_at=None,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        resolved_by=None,
        tier=-1,
        next_escalation_at=now,
        updated_at=now,
    )
    session.add(incident)
    audit(session, now, actor, "incident.opened", "incident", incident.id, site=site,
          kind=kind, severity=severity, key=key, event=event_id)  # fmt: skip
    return incident


def clear(
    session: Session, incident: IncidentRow, now: datetime, *, at: datetime, event_id: str | None
) -> None:
    """The cause is gone: mark cleared, and resolve an acknowledged incident."""
    if incident.state == RESOLVED or incident.cleared_at is not None:
        return
    incident.cleared_at = at
    incident.updated_at = now
    audit(session, now, SYSTEM, "incident.cleared", "incident", incident.id,
          site=incident.site, event=event_id)  # fmt: skip
    if incident.state == ACKNOWLEDGED:
        _resolve(session, incident, now, SYSTEM, note="cleared after acknowledgement")


def acknowledge(session: Session, incident: IncidentRow, now: datetime, actor: str) -> None:
    if incident.state != OPEN:
        raise IncidentStateError(f"incident {incident.id} is {incident.state}, not open")
    incident.state = ACKNOWLEDGED
    incident.acknowledged_at = now
    incident.acknowledged_by = actor
    incident.next_escalation_at = None  # acknowledged: escalation stops here
    incident.updated_at = now
    audit(session, now, actor, "incident.acknowledged", "incident", incident.id,
          site=incident.site)  # fmt: skip
    if incident.cleared_at is not None:
        _resolve(session, incident, now, SYSTEM, note="acknowledged after it cleared")


def resolve(
    session: Session, incident: IncidentRow, now: datetime, actor: str, note: str = ""
) -> None:
    if incident.state == RESOLVED:
        raise IncidentStateError(f"incident {incident.id} is already resolved")
    _resolve(session, incident, now, actor, note=note)


def _resolve(session: Session, incident: IncidentRow, now: datetime, actor: str, note: str) -> None:
    incident.state = RESOLVED
    incident.resolved_at = now
    incident.resolved_by = actor
    incident.next_escalation_at = None
    incident.updated_at = now
    audit(session, now, actor, "incident.resolved", "incident", incident.id,
          site=incident.site, note=note)  # fmt: skip
