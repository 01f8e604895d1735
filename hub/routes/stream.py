"""A live stream of incidents (server-sent events) for the web console and the family app.

The stream tails the audit log, where every change of every incident is written in the same
transaction as the change, so it shows changes made by any hub process, in commit order of
the log's ids, and a client that reconnects with ``Last-Event-ID`` misses nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from hub.auth import Principal
from hub.deps import PrincipalDep, StoreDep
from hub.errors import StoreError
from hub.routes.incidents import IncidentOut
from hub.store import Store

router = APIRouter(prefix="/api/v1/stream", tags=["stream"])

POLL_S = 0.25
KEEPALIVE_S = 15.0


async def _events(
    request: Request, store: Store, principal: Principal, after: int
) -> AsyncIterator[bytes]:
    idle = 0.0
    yield b": connected\n\n"
    while True:
        if await request.is_disconnected():
            return
        try:
            lines = await asyncio.to_thread(partial(store.audit, after_id=after, limit=200))
        except StoreError:
            lines = []  # the database is away; keep the stream and try again
        sent = False
        for line in lines:
            after = line.id
            if line.subject_type != "incident":
                continue
            record = await asyncio.to_thread(store.incident, line.subject_id, principal.scope)
            if record is None:
                continue  # not the caller's to see
            data = IncidentOut.model_validate(record).model_dump(mode="json")
            payload = json.dumps({"action": line.action, "actor": line.actor, "incident": data})
            yield f"id: {line.id}\nevent: incident\ndata: {payload}\n\n".encode()
            sent = True
        if sent or lines:
            idle = 0.0
            continue
        await asyncio.sleep(POLL_S)
        idle += POLL_S
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield b": keepalive\n\n"


@router.get("/incidents", response_class=StreamingResponse)
async def incident_stream(
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events, one per incident change the caller may see (``event: incident``).

    Starts from now, or after ``Last-Event-ID`` when a client reconnects.
    """
    if last_event_id is not None and last_event_id.isdigit():
        after = int(last_event_id)
    else:
        latest = await asyncio.to_thread(store.latest_audit_id)
        after = latest
    return StreamingResponse(
        _events(request, store, principal, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
