"""Broadcasts and the receipts of the speakers that played them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict

from hub.auth import Principal
from hub.deps import PrincipalDep, StoreDep
from hub.errors import StoreError
from hub.store import BroadcastRecord

router = APIRouter(prefix="/api/broadcasts", tags=["broadcasts"])


class ReceiptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    speaker: str
    site: str
    gateway: str
    building: str | None
    outcome: str
    content_hash: str
    detail: str
    ts: datetime
    received_at: datetime


class BroadcastOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    receipts: list[ReceiptOut]


def _out(record: BroadcastRecord) -> BroadcastOut:
    return BroadcastOut.model_validate(record)


def _visible(record: BroadcastRecord, principal: Principal) -> BroadcastRecord | None:
    """A family sees broadcasts to their relatives' buildings (or the whole site), with the
    receipts of their buildings' speakers only; everyone else sees everything."""
    units = principal.scope.units
    if units is None:
        return record
    buildings = {building for site, building, _ in units if site == record.site}
    if not buildings:
        return None
    if record.buildings and not buildings.intersection(record.buildings):
        return None
    receipts = tuple(r for r in record.receipts if r.building in buildings)
    return replace(record, receipts=receipts)


@router.get("")
async def list_broadcasts(
    store: StoreDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[BroadcastOut]:
    """Broadcasts, newest first, each with its receipts."""
    try:
        records = await asyncio.to_thread(store.broadcasts, limit, offset)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    visible = (_visible(record, principal) for record in records)
    return [_out(record) for record in visible if record is not None]


@router.get("/{broadcast_id}")
async def get_broadcast(
    store: StoreDep, principal: PrincipalDep, broadcast_id: str
) -> BroadcastOut:
    try:
        record = await asyncio.to_thread(store.broadcast, broadcast_id)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    if record is not None:
        record = _visible(record, principal)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no broadcast {broadcast_id}")
    return _out(record)
