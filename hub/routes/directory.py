"""Residents, people and family links; the audit log; gateways."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from hub.auth import ADMIN, COMMITTEE, INSTALLER, ROLES, STAFF, hash_password
from hub.deps import MAX_DB_INT, ClockDep, PrincipalDep, RowId, StoreDep, Text, require
from hub.directory import DirectoryError
from hub.errors import StoreError
from hub.routes.incidents import AuditOut

router = APIRouter(prefix="/api/v1", tags=["directory"])

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def _unavailable() -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")


class ResidentIn(BaseModel):
    name: Text = Field(min_length=1, max_length=128)
    site: Code
    building: Code
    unit: Code


class ResidentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    site: str
    building: str
    unit: str


class PersonIn(BaseModel):
    username: Code
    name: Text = Field(min_length=1, max_length=128)
    role: Text
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    email: Text | None = Field(default=None, max_length=256)
    phone: Text | None = Field(default=None, max_length=32)


class PersonOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    name: str
    role: str
    email: str | None
    phone: str | None
    active: bool


class Created(BaseModel):
    id: int


class GatewayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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


@router.get("/residents")
async def list_residents(store: StoreDep, principal: PrincipalDep) -> list[ResidentOut]:
    """Residents the caller may see (a family member: their own relatives)."""
    if principal.role == INSTALLER:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "installers do not see residents")
    try:
        records = await asyncio.to_thread(store.residents, principal.scope)
    except StoreError as exc:
        raise _unavailable() from exc
    return [ResidentOut.model_validate(r) for r in records]


@router.post("/residents", dependencies=[Depends(require(ADMIN, STAFF))], status_code=201)
async def add_resident(
    body: ResidentIn, store: StoreDep, principal: PrincipalDep, clock: ClockDep
) -> Created:
    try:
        resident_id = await asyncio.to_thread(
            store.add_resident, body.name, body.site, body.building, body.unit
        )
        await asyncio.to_thread(
            lambda: store.append_audit(
                clock(), principal.actor, "resident.added", "resident", str(resident_id),
                site=body.site,
            )
        )  # fmt: skip
    except StoreError as exc:
        raise _unavailable() from exc
    return Created(id=resident_id)


@router.get("/people", dependencies=[Depends(require(ADMIN, STAFF, COMMITTEE))])
async def list_people(store: StoreDep, role: Text | None = None) -> list[PersonOut]:
    try:
        records = await asyncio.to_thread(store.people, role)
    except StoreError as exc:
        raise _unavailable() from exc
    return [PersonOut.model_validate(r) for r in records]


@router.post("/people", dependencies=[Depends(require(ADMIN))], status_code=201)
async def add_person(
    body: PersonIn, store: StoreDep, principal: PrincipalDep, clock: ClockDep
) -> Created:
    if body.role not in ROLES:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"roles are {', '.join(ROLES)}")
    password_hash = await asyncio.to_thread(hash_password, body.password) if body.password else None
    try:
        person_id = await asyncio.to_thread(
            lambda: store.add_person(
                body.username,
                body.name,
                body.role,
                password_hash=password_hash,
                email=body.email,
                phone=body.phone,
            )
        )
        await asyncio.to_thread(
            lambda: store.append_audit(
                clock(), principal.actor, "person.added", "person", str(person_id),
                role=body.role, username=body.username,
            )
        )  # fmt: skip
    except DirectoryError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except StoreError as exc:
        raise _unavailable() from exc
    return Created(id=person_id)


@router.put(
    "/people/{person_id}/relatives/{resident_id}",
    dependencies=[Depends(require(ADMIN))],
    status_code=204,
)
async def link_relative(
    person_id: RowId, resident_id: RowId, store: StoreDep, principal: PrincipalDep, clock: ClockDep
) -> None:
    """Let a family member read this resident's data (and be told about them)."""
    try:
        await asyncio.to_thread(store.link_family, person_id, resident_id)
        await asyncio.to_thread(
            lambda: store.append_audit(
                clock(), principal.actor, "family.linked", "person", str(person_id),
                resident=resident_id,
            )
        )  # fmt: skip
    except DirectoryError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except StoreError as exc:
        raise _unavailable() from exc


@router.get("/audit", dependencies=[Depends(require(ADMIN, STAFF, COMMITTEE))])
async def audit_log(
    store: StoreDep,
    after_id: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AuditOut]:
    """The audit log, oldest first; page with ``after_id``."""
    try:
        records = await asyncio.to_thread(lambda: store.audit(after_id=after_id, limit=limit))
    except StoreError as exc:
        raise _unavailable() from exc
    return [AuditOut.model_validate(r) for r in records]


@router.get("/gateways", dependencies=[Depends(require(ADMIN, STAFF, COMMITTEE, INSTALLER))])
async def list_gateways(store: StoreDep, clock: ClockDep) -> list[GatewayOut]:
    """Every gateway with its last heartbeat; ``stale`` when it has gone quiet."""
    try:
        records = await asyncio.to_thread(store.gateway_states, clock())
    except StoreError as exc:
        raise _unavailable() from exc
    return [GatewayOut.model_validate(r) for r in records]
