"""Incidents: list, read, their events and audit trail; acknowledge and resolve."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from hub.auth import ADMIN, COMMITTEE, FAMILY, INSTALLER, STAFF
from hub.deps import ClockDep, Offset, PrincipalDep, StoreDep, Text, require
from hub.errors import StoreError
from hub.incidents import IncidentRecord, IncidentStateError, UnknownIncident
from hub.routes.alerts import AlertOut

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

State = Literal["open", "acknowledged", "resolved"]


class IncidentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    site: str | None
    detail: dict[str, object]


class Note(BaseModel):
    note: Text = Field(default="", max_length=500)


def _unavailable(exc: StoreError) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")


async def _visible(store: StoreDep, principal: PrincipalDep, incident_id: Text) -> IncidentRecord:
    try:
        record = await asyncio.to_thread(store.incident, incident_id, principal.scope)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if record is None:
        # The same answer for "none" and "not yours": a family cannot probe others' ids.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}")
    return record


@router.get("")
async def list_incidents(
    store: StoreDep,
    principal: PrincipalDep,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[IncidentOut]:
    """Incidents the caller may see, newest first (a family: only their relatives')."""
    try:
        records = await asyncio.to_thread(
            store.incidents, principal.scope, state=state, limit=limit, offset=offset
        )
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return [IncidentOut.model_validate(r) for r in records]


@router.get("/{incident_id}")
async def get_incident(store: StoreDep, principal: PrincipalDep, incident_id: Text) -> IncidentOut:
    return IncidentOut.model_validate(await _visible(store, principal, incident_id))


@router.get("/{incident_id}/events")
async def incident_events(
    store: StoreDep, principal: PrincipalDep, incident_id: Text
) -> list[AlertOut]:
    await _visible(store, principal, incident_id)
    try:
        records = await asyncio.to_thread(store.incident_events, incident_id)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return [AlertOut.model_validate(r) for r in records]


@router.get(
    "/{incident_id}/audit", dependencies=[Depends(require(ADMIN, STAFF, COMMITTEE, FAMILY))]
)
async def incident_audit(
    store: StoreDep, principal: PrincipalDep, incident_id: Text
) -> list[AuditOut]:
    """Who did what to this incident, oldest first."""
    await _visible(store, principal, incident_id)
    try:
        records = await asyncio.to_thread(lambda: store.audit(subject_id=incident_id))
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return [AuditOut.model_validate(r) for r in records]


@router.post(
    "/{incident_id}/acknowledge",
    dependencies=[Depends(require(ADMIN, STAFF, COMMITTEE, FAMILY, INSTALLER))],
)
async def acknowledge(
    store: StoreDep, principal: PrincipalDep, clock: ClockDep, incident_id: Text
) -> IncidentOut:
    """Someone is on it: escalation stops. A family member may acknowledge their relative's."""
    try:
        record = await asyncio.to_thread(
            store.acknowledge_incident, incident_id, principal.actor, clock(), principal.scope
        )
    except UnknownIncident as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}") from exc
    except IncidentStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return IncidentOut.model_validate(record)


@router.post("/{incident_id}/resolve", dependencies=[Depends(require(ADMIN, STAFF, COMMITTEE))])
async def resolve(
    store: StoreDep,
    principal: PrincipalDep,
    clock: ClockDep,
    incident_id: Text,
    body: Note | None = None,
) -> IncidentOut:
    note = body.note if body else ""
    try:
        record = await asyncio.to_thread(
            store.resolve_incident, incident_id, principal.actor, clock(), principal.scope, note
        )
    except UnknownIncident as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}") from exc
    except IncidentStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return IncidentOut.model_validate(record)
