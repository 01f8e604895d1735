"""Places and people: sites, buildings, units, devices, residents, people, family links.

Plain records in and out; ``Store`` methods wrap these in transactions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import HubError
from hub.incidents import Scope
from hub.tables import (
    BuildingRow,
    DeviceRow,
    FamilyLinkRow,
    PersonRow,
    ResidentRow,
    SiteRow,
    UnitRow,
)

ADMIN, STAFF, COMMITTEE, FAMILY, INSTALLER = "admin", "staff", "committee", "family", "installer"
ROLES = (ADMIN, STAFF, COMMITTEE, FAMILY, INSTALLER)  # people, whom policies can notify
# A gateway (or a fire panel) that posts alert events over HTTP: an account, not a person. Its
# username is "gateway@site", as on the broker, and it may post only its own events.
GATEWAY = "gateway"
ACCOUNT_ROLES = (*ROLES, GATEWAY)


def gateway_of(username: str) -> tuple[str, str] | None:
    """(site, gateway) of a gateway account's username "gateway@site", or None."""
    gateway, at, site = username.partition("@")
    if not at or not gateway or not site or "@" in site:
        return None
    return site, gateway


class DirectoryError(HubError):
    """A place or person that does not exist, or already does."""


@dataclass(frozen=True, slots=True)
class PersonRecord:
    id: int
    username: str
    name: str
    role: str
    email: str | None
    phone: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class ResidentRecord:
    id: int
    name: str
    site: str
    building: str
    unit: str


def person_record(row: PersonRow) -> PersonRecord:
    return PersonRecord(
        id=row.id,
        username=row.username,
        name=row.name,
        role=row.role,
        email=row.email,
        phone=row.phone,
        active=row.active,
    )


def ensure_site(session: Session, site: str, name: str = "") -> None:
    if session.get(SiteRow, site) is None:
        session.add(SiteRow(id=site, name=name or site))
        session.flush()


def ensure_building(session: Session, site: str, building: str, name: str = "") -> None:
    ensure_site(session, site)
    if session.get(BuildingRow, (site, building)) is None:
        session.add(BuildingRow(site=site, code=building, name=name or building))
        session.flush()


def ensure_unit(session: Session, site: str, building: str, unit: str) -> UnitRow:
    ensure_building(session, site, building)
    row = session.scalar(
        select(UnitRow).where(
            UnitRow.site == site, UnitRow.building == building, UnitRow.code == unit
        )
    )
    if row is None:
        row = UnitRow(site=site, building=building, code=unit)
        session.add(row)
        session.flush()
    return row


def add_device(
    session: Session, site: str, gateway: str, device: str, kind: str, unit: UnitRow | None
) -> None:
    session.merge(
        DeviceRow(
            site=site, gateway=gateway, device=device, kind=kind, unit_id=unit.id if unit else None
        )
    )


def add_resident(session: Session, name: str, site: str, building: str, unit: str) -> int:
    row = ResidentRow(name=name, unit_id=ensure_unit(session, site, building, unit).id)
    session.add(row)
    session.flush()
    return row.id


def add_person(
    session: Session,
    username: str,
    name: str,
    role: str,
    *,
    password_hash: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> int:
    if role not in ACCOUNT_ROLES:
        raise DirectoryError(f"unknown role {role!r}; roles are {', '.join(ACCOUNT_ROLES)}")
    if role == GATEWAY and gateway_of(username) is None:
        raise DirectoryError(
            f"a gateway account is named gateway@site (as on the broker), not {username!r}"
        )
    if session.scalar(select(PersonRow.id).where(PersonRow.username == username)) is not None:
        raise DirectoryError(f"there is already a person {username!r}")
    row = PersonRow(
        username=username,
        name=name,
        role=role,
        password_hash=password_hash,
        email=email,
        phone=phone,
        active=True,
    )
    session.add(row)
    session.flush()
    return row.id


def link_family(session: Session, person_id: int, resident_id: int) -> None:
    person = session.get(PersonRow, person_id)
    if person is None or person.role != FAMILY:
        raise DirectoryError(f"person {person_id} is not a family member")
    if session.get(ResidentRow, resident_id) is None:
        raise DirectoryError(f"no resident {resident_id}")
    if session.get(FamilyLinkRow, (person_id, resident_id)) is None:
        session.add(FamilyLinkRow(person_id=person_id, resident_id=resident_id))


def scope_of(session: Session, person_id: int, role: str) -> Scope:
    """What a person may read: a family member only their relatives' units; a gateway
    account nothing; others all."""
    if role == GATEWAY:
        return Scope(frozenset())
    if role != FAMILY:
        return Scope()
    rows = session.execute(
        select(UnitRow.site, UnitRow.building, UnitRow.code)
        .join(ResidentRow, ResidentRow.unit_id == UnitRow.id)
        .join(FamilyLinkRow, FamilyLinkRow.resident_id == ResidentRow.id)
        .where(FamilyLinkRow.person_id == person_id)
    )
    return Scope(frozenset((site, building, code) for site, building, code in rows))


def residents(session: Session, scope: Scope) -> list[ResidentRecord]:
    query = select(
        ResidentRow.id, ResidentRow.name, UnitRow.site, UnitRow.building, UnitRow.code
    ).join(UnitRow, UnitRow.id == ResidentRow.unit_id)
    where = scope.where(UnitRow.site, UnitRow.building, UnitRow.code)
    if where is not None:
        query = query.where(where)
    return [
        ResidentRecord(id=i, name=n, site=s, building=b, unit=u)
        for i, n, s, b, u in session.execute(query.order_by(ResidentRow.id))
    ]


def family_of(session: Session, site: str, building: str | None, unit: str | None) -> list[int]:
    """The family members linked to a resident of this unit (people to tell about it)."""
    if building is None or unit is None:
        return []
    rows = session.scalars(
        select(FamilyLinkRow.person_id)
        .join(ResidentRow, ResidentRow.id == FamilyLinkRow.resident_id)
        .join(UnitRow, UnitRow.id == ResidentRow.unit_id)
        .where(UnitRow.site == site, UnitRow.building == building, UnitRow.code == unit)
        .distinct()
    )
    return sorted(rows)
