"""Is the hub up, and can it reach the broker and the database?"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from hub.deps import LinkDep, StoreDep
from hub.errors import StoreError

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    mqtt: Literal["connected", "disconnected"]
    db: Literal["ok", "error"]


@router.get("/health")
async def health(store: StoreDep, link: LinkDep, response: Response) -> Health:
    try:
        await asyncio.to_thread(store.ping)
        db: Literal["ok", "error"] = "ok"
    except StoreError as exc:
        log.error("health: database unreachable: %s", exc)
        db = "error"
    # A broker outage is survivable (the link reconnects, edges keep their outboxes), so the hub
    # still reports ok; without its database it cannot take alerts and must say so.
    if db == "error":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if db == "ok" else "degraded",
        mqtt="connected" if link.connected.is_set() else "disconnected",
        db=db,
    )
