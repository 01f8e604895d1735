"""Stored alert events."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict

from hub.deps import Offset, PrincipalDep, StoreDep
from hub.errors import StoreError

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    key: str
    phase: str
    severity: str
    kind: str
    rule: str
    site: str
    gateway: str
    device: str | None
    building: str | None
    unit: str | None
    ts: datetime
    received_at: datetime
    evidence: dict[str, float]
    message: str


@router.get("")
async def list_alerts(
    store: StoreDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[AlertOut]:
    """Alert events the caller may see, newest first (a family: only their relatives')."""
    try:
        records = await asyncio.to_thread(store.alerts_in, principal.scope, limit, offset)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    return [AlertOut.model_validate(record) for record in records]
