"""A resident's data: everything the hub holds about them, exported, or erased.

Export gathers the resident, their unit and its devices, their family (the people linked to
them), the alert events and incidents of their unit, and the notifications sent to their
family about those incidents, plus the audit lines about the resident.

Erasure deletes the resident (and so their family links), deletes the deliveries to their
family about their unit's incidents, pseudonymises the accounts of family members linked to
no one else, and anonymises the safety record instead of deleting it: the unit's alert events
and incidents keep their site, building, kind, severity and times (the record that a fall
or a gas leak happened and how fast it was answered), but lose the unit, the device, the key,
the evidence and the message. All in one transaction, audited as ``resident.erased``.

The audit log itself is not rewritten (it is append-only, see hub/retention.py): it holds ids
and usernames, never a resident's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from hub import tables
from hub.errors import HubError
from hub.incidents import audit
from hub.store import Store
from hub.tables import (
    AlertRow,
    AuditRow,
    DeliveryRow,
    DeviceRow,
    FamilyLinkRow,
    IncidentRow,
    PersonRow,
    ResidentRow,
    UnitRow,
)

ERASED = "erased"
# A family member's browser push subscriptions (migration 0004), where this hub has them.
_PUSH: Any = getattr(tables, "WebPushSubscriptionRow", None)


class NoSuchResident(HubError):
    """The resident id is unknown (or was already erased)."""


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure changed, by kind of record."""

    resident_id: int
    alert_events: int
    incidents: int
    deliveries: int
    family_links: int
    people_pseudonymised: int

    def as_dict(self) -> dict[str, int]:
        return {
            "alert_events": self.alert_events,
            "incidents": self.incidents,
            "deliveries": self.deliveries,
            "family_links": self.family_links,
            "people_pseudonymised": self.people_pseudonymised,
        }


def _columns(row: Any) -> dict[str, Any]:
    """A row as a JSON-ready dict (datetimes as ISO 8601)."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _place(session: Session, resident_id: int) -> tuple[ResidentRow, UnitRow]:
    resident = session.get(ResidentRow, resident_id)
    if resident is None:
        raise NoSuchResident(f"no resident {resident_id}")
    unit = session.get(UnitRow, resident.unit_id)
    if unit is None:  # the foreign key makes this impossible; say so if it happens
        raise NoSuchResident(f"resident {resident_id} has no unit")
    return resident, unit


def _in_unit(unit: UnitRow, devices: list[str], row: type[AlertRow] | type[IncidentRow]) -> Any:
    """Rows of this unit: by place, or by one of its devices."""
    by_place = and_(row.site == unit.site, row.building == unit.building, row.unit == unit.code)
    if not devices:
        return by_place
    return or_(by_place, and_(row.site == unit.site, row.device.in_(devices)))


def _family(session: Session, resident_id: int) -> list[PersonRow]:
    query = (
        select(PersonRow)
        .join(FamilyLinkRow, FamilyLinkRow.person_id == PersonRow.id)
        .where(FamilyLinkRow.resident_id == resident_id)
        .order_by(PersonRow.id)
    )
    return list(session.scalars(query))


def export_resident(store: Store, resident_id: int) -> dict[str, Any]:
    """Everything the hub holds about one resident, as JSON-ready data."""
    with store.reading() as session:
        resident, unit = _place(session, resident_id)
        devices = list(session.scalars(select(DeviceRow).where(DeviceRow.unit_id == unit.id)))
        device_ids = [d.device for d in devices]
        family = _family(session, resident_id)
        alerts = session.scalars(
            select(AlertRow).where(_in_unit(unit, device_ids, AlertRow)).order_by(AlertRow.ts)
        ).all()
        incidents = session.scalars(
            select(IncidentRow)
            .where(_in_unit(unit, device_ids, IncidentRow))
            .order_by(IncidentRow.opened_at)
        ).all()
        incident_ids = [i.id for i in incidents]
        deliveries = session.scalars(
            select(DeliveryRow)
            .where(
                DeliveryRow.person_id.in_([p.id for p in family]),
                DeliveryRow.incident_id.in_(incident_ids),
            )
            .order_by(DeliveryRow.id)
        ).all()
        audit_lines = session.scalars(
            select(AuditRow)
            .where(AuditRow.subject_type == "resident", AuditRow.subject_id == str(resident_id))
            .order_by(AuditRow.id)
        ).all()
        people = []
        for person in family:
            entry = _columns(person)
            entry.pop("password_hash", None)  # a secret, not data about the resident
            people.append(entry)
        return {
            "resident": _columns(resident),
            "unit": {"site": unit.site, "building": unit.building, "unit": unit.code},
            "devices": [_columns(d) for d in devices],
            "family": people,
            "alert_events": [_columns(a) for a in alerts],
            "incidents": [_columns(i) for i in incidents],
            "deliveries": [_columns(d) for d in deliveries],
            "audit": [_columns(a) for a in audit_lines],
        }


def erase_resident(store: Store, resident_id: int, *, actor: str, now: datetime) -> Erasure:
    """Erase one resident's personal data and anonymise their unit's safety record."""
    with store.writing() as session:
        resident, unit = _place(session, resident_id)
        device_ids = list(
            session.scalars(select(DeviceRow.device).where(DeviceRow.unit_id == unit.id))
        )
        family = _family(session, resident_id)
        incident_ids = list(
            session.scalars(select(IncidentRow.id).where(_in_unit(unit, device_ids, IncidentRow)))
        )
        deliveries = 0
        if family and incident_ids:
            deliveries = _rows(
                session.execute(
                    delete(DeliveryRow).where(
                        DeliveryRow.person_id.in_([p.id for p in family]),
                        DeliveryRow.incident_id.in_(incident_ids),
                    )
                )
            )
        alert_events = _rows(
            session.execute(
                update(AlertRow)
                .where(_in_unit(unit, device_ids, AlertRow))
                .values(
                    unit=None,
                    device=None,
                    key=ERASED,
                    evidence={},
                    message=f"{ERASED}: personal data removed",
                )
                .execution_options(synchronize_session=False)
            )
        )
        incidents = 0
        if incident_ids:
            incidents = _rows(
                session.execute(
                    update(IncidentRow)
                    .where(IncidentRow.id.in_(incident_ids))
                    .values(
                        unit=None,
                        device=None,
                        key=IncidentRow.id,  # unique, so no later event can join it
                        message=f"{ERASED}: personal data removed",
                    )
                    .execution_options(synchronize_session=False)
                )
            )
        pseudonymised = 0
        for person in family:
            others = session.scalar(
                select(FamilyLinkRow.resident_id).where(
                    FamilyLinkRow.person_id == person.id, FamilyLinkRow.resident_id != resident_id
                )
            )
            if others is None:
                person.username = f"{ERASED}-{person.id}"
                person.name = ERASED
                person.email = None
                person.phone = None
                person.password_hash = None
                person.active = False
                if _PUSH is not None:  # their browser's push endpoint identifies them too
                    session.execute(delete(_PUSH).where(_PUSH.person_id == person.id))
                pseudonymised += 1
        links = _rows(
            session.execute(delete(FamilyLinkRow).where(FamilyLinkRow.resident_id == resident_id))
        )
        session.delete(resident)
        erasure = Erasure(resident_id, alert_events, incidents, deliveries, links, pseudonymised)
        audit(
            session, now, actor, "resident.erased", "resident", str(resident_id),
            site=unit.site, **erasure.as_dict(),
        )  # fmt: skip
        return erasure


def _rows(result: object) -> int:
    rowcount = getattr(result, "rowcount", 0)
    return int(rowcount) if isinstance(rowcount, int) and rowcount > 0 else 0
