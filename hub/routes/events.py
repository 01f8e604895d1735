"""Alert events over HTTP, for systems that do not speak MQTT (a fire panel, a third-party
gateway): the same intake as MQTT, idempotent on the event id. The response is the ack."""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel

from bus import BusError
from hub.auth import ADMIN, GATEWAY, INSTALLER, STAFF, Principal
from hub.deps import ClockDep, IntakeDep, require
from hub.directory import gateway_of
from hub.errors import StoreError
from wire import AlertEvent, WireError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/events", tags=["events"])

MAX_BATCH = 500


class EventResult(BaseModel):
    id: str
    stored: bool  # False: already stored before (a repeat); it is acknowledged all the same
    incident_id: str | None


class EventsAck(BaseModel):
    results: list[EventResult]


@router.post(
    "",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"description": "an AlertEvent or a list"}}},
        }
    },
)
async def post_events(
    request: Request,
    intake: IntakeDep,
    clock: ClockDep,
    principal: Annotated[Principal, Depends(require(ADMIN, STAFF, INSTALLER, GATEWAY))],
) -> EventsAck:
    """Store one alert event (a JSON object) or a batch (a JSON array of up to 500), once each.

    Validated by the wire's own ``AlertEvent`` model, exactly as on MQTT. A 200 means every
    event is durably stored; on 503 nothing is acknowledged and the sender should retry.
    """
    body = await request.body()
    now = clock()
    try:
        if body.lstrip()[:1] == b"[":
            raws = msgspec.json.decode(body, type=list[msgspec.Raw])
            if not raws or len(raws) > MAX_BATCH:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, f"send 1 to {MAX_BATCH} events at a time"
                )
            events = [
                intake.codec.decode(bytes(raw), AlertEvent, now, check_time=False) for raw in raws
            ]
        else:
            events = [intake.codec.decode(body, AlertEvent, now, check_time=False)]
    except msgspec.DecodeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}") from exc
    except WireError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{exc.reason}: {exc}") from exc
    if principal.role == GATEWAY:
        _check_own(principal.username, events)
    try:
        # A batch is stored in one transaction: all of it is acknowledged, or none.
        recorded = await intake.accept_alerts(events, now)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    results: list[EventResult] = []
    for event, done in zip(events, recorded, strict=True):
        results.append(EventResult(id=event.id, stored=done.stored, incident_id=done.incident_id))
        try:
            await intake.publish_caused(done)
        except BusError as exc:
            # Committed, so acknowledged; the broadcast is retried by the pending loop.
            log.warning("broadcast for %s not published yet: %s", event.id, exc)
    return EventsAck(results=results)


def _check_own(username: str, events: list[AlertEvent]) -> None:
    """A gateway account posts only its own events, as its broker ACL lets it publish only on
    its own topics; the whole request is refused if one event names another gateway."""
    own = gateway_of(username)
    for event in events:
        if own != (event.site, event.gateway):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"event {event.id} is from {event.gateway}@{event.site}; "
                f"{username} may post only its own events",
            )
