"""Broadcasts and the receipts of the speakers that played them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict

from hub.deps import StoreDep
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


@router.get("")
async def list_broadcasts(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[BroadcastOut]:
    """Broadcasts, newest first, each with its receipts."""
    try:
        records = await asyncio.to_thread(store.broadcasts, limit, offset)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    return [_out(record) for record in records]


@router.get("/{broadcast_id}")
async def get_broadcast(store: StoreDep, broadcast_id: str) -> BroadcastOut:
    try:
        record = await asyncio.to_thread(store.broadcast, broadcast_id)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no broadcast {broadcast_id}")
    return _out(record)
