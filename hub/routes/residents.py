"""A resident's data on request: export (everything about them) and erasure. Admins only."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel

from hub.auth import ADMIN
from hub.deps import ClockDep, PrincipalDep, RowId, StoreDep, require
from hub.errors import StoreError
from hub.privacy import NoSuchResident, erase_resident, export_resident

router = APIRouter(
    prefix="/api/v1/residents", tags=["privacy"], dependencies=[Depends(require(ADMIN))]
)


class Erased(BaseModel):
    resident_id: int
    alert_events: int
    incidents: int
    deliveries: int
    family_links: int
    people_pseudonymised: int


def _unavailable() -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")


@router.get("/{resident_id}/export")
async def export(
    resident_id: RowId, store: StoreDep, principal: PrincipalDep, clock: ClockDep
) -> dict[str, Any]:
    """Everything the hub holds about this resident (a data subject's access request)."""
    try:
        data = await asyncio.to_thread(export_resident, store, resident_id)
        await asyncio.to_thread(
            lambda: store.append_audit(
                clock(), principal.actor, "resident.exported", "resident", str(resident_id)
            )
        )
    except NoSuchResident as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except StoreError as exc:
        raise _unavailable() from exc
    return data


@router.post("/{resident_id}/erase")
async def erase(
    resident_id: RowId, store: StoreDep, principal: PrincipalDep, clock: ClockDep
) -> Erased:
    """Erase this resident's personal data; their unit's safety record stays, anonymised."""
    try:
        erasure = await asyncio.to_thread(
            lambda: erase_resident(store, resident_id, actor=principal.actor, now=clock())
        )
    except NoSuchResident as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except StoreError as exc:
        raise _unavailable() from exc
    return Erased(resident_id=erasure.resident_id, **erasure.as_dict())
