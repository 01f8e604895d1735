"""Broadcasts: compose, approve, cancel, coverage (``/api/v1/broadcasts``), outside CAP intake,
the public CAP Atom feed, and the old read-only list (``/api/broadcasts``).

docs/broadcast.md describes the API; ``hub.broadcasting`` and ``hub.cap_feed`` do the work.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hub.auth import ADMIN, COMMITTEE, STAFF, Principal
from hub.broadcast_rows import SENT, Coverage
from hub.broadcasting import (
    Broadcaster,
    BroadcastError,
    BroadcastView,
    CancelText,
    ComposeRequest,
)
from hub.cap_feed import CapIntake, atom
from hub.deps import ClockDep, Offset, PrincipalDep, StoreDep, Text, require
from hub.errors import StoreError
from hub.store import BroadcastRecord
from wire import cap, topics

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
    offset: Offset = 0,
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
    store: StoreDep, principal: PrincipalDep, broadcast_id: Text
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


# -- /api/v1: compose, approve, cancel, coverage, outside CAP ------------------------------------

v1 = APIRouter(prefix="/api/v1", tags=["broadcasts"])
public = APIRouter(prefix="/api/v1/sites", tags=["cap feed"])

BROADCASTERS = (ADMIN, STAFF)
READERS = (ADMIN, STAFF, COMMITTEE)
CAP_XML = "application/cap+xml"
COVERAGE_POLL_S = 0.5
KEEPALIVE_S = 15.0


def get_broadcaster(request: Request) -> Broadcaster:
    return cast(Broadcaster, request.app.state.broadcaster)


def get_cap_intake(request: Request) -> CapIntake:
    return cast(CapIntake, request.app.state.cap_intake)


BroadcasterDep = Annotated[Broadcaster, Depends(get_broadcaster)]
CapIntakeDep = Annotated[CapIntake, Depends(get_cap_intake)]


async def may_broadcast(
    request: Request, principal: PrincipalDep, broadcaster: BroadcasterDep, clock: ClockDep
) -> Principal:
    """Only staff and administrators broadcast; anyone else's attempt is refused and audited.

    A dependency, so it runs (and audits) before the body is even read."""
    if principal.role not in BROADCASTERS:
        try:
            await asyncio.to_thread(
                broadcaster.broadcasts.refuse,
                principal.actor,
                clock(),
                f"role {principal.role} may not broadcast",
                role=principal.role,
                path=request.url.path,
            )
        except StoreError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable"
            ) from exc
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"{principal.role} may not broadcast (staff or admin only)"
        )
    return principal


BroadcasterPrincipal = Annotated[Principal, Depends(may_broadcast)]
Reader = Annotated[Principal, Depends(require(*READERS))]


class BroadcastV1Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    site: str
    status: str
    msg_type: str
    state: str  # pending, approved (publishing), sent, rejected
    origin: str  # manual, auto (fire, gas), relay (an outside authority)
    scope: str
    severity: str
    headline: str
    text: str
    language: str
    buildings: list[str]
    repeat: int
    created_at: datetime
    expires: datetime | None
    published_at: datetime | None
    proposed_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    override_reason: str | None
    refers_to: str | None
    superseded_by: str | None
    cause: str | None
    content_hash: str | None
    targeted: int
    confirmed: int


class SpeakerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    speaker: str
    gateway: str
    building: str | None
    known_from: str
    confirmed_at: datetime | None
    failed: str | None


class GatewayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    gateway: str
    attempts: int
    next_at: datetime | None
    last_published_at: datetime | None
    saw_down: bool


class CoverageOut(BaseModel):
    broadcast_id: str
    state: str
    targeted: int
    confirmed: int
    percent: float
    confirmed_speakers: list[SpeakerOut]
    missing: list[SpeakerOut]
    gateways: list[GatewayOut]


class SaidOut(BaseModel):
    language: str
    text: str


class PreviewOut(BaseModel):
    script: list[SaidOut]
    spoken: str  # the script as one text, what the content hash covers
    content_hash: str
    cap_xml: str
    needs_approval: bool
    targeted: int


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(default="", max_length=500)


class IntakeOut(BaseModel):
    id: int | None
    decision: str  # relayed, held, refused, duplicate
    reason: str
    broadcast_id: str | None
    sender: str
    identifier: str


class IntakeRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    site: str
    source: str
    sender: str
    identifier: str
    sent: str
    received_at: datetime
    decision: str
    reason: str
    broadcast_id: str | None


def _v1(view: BroadcastView) -> BroadcastV1Out:
    return BroadcastV1Out.model_validate(view)


def _coverage(coverage: Coverage) -> CoverageOut:
    return CoverageOut(
        broadcast_id=coverage.broadcast_id,
        state=coverage.state,
        targeted=coverage.targeted,
        confirmed=coverage.confirmed,
        percent=coverage.percent,
        confirmed_speakers=[
            SpeakerOut.model_validate(s) for s in coverage.speakers if s.confirmed_at is not None
        ],
        missing=[SpeakerOut.model_validate(s) for s in coverage.missing],
        gateways=[GatewayOut.model_validate(g) for g in coverage.gateways],
    )


def _unavailable(exc: StoreError) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")


@contextmanager
def _http_errors() -> Iterator[None]:
    """A refused broadcast answers with its own status and reason; a database down, 503."""
    try:
        yield
    except BroadcastError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    except StoreError as exc:
        raise _unavailable(exc) from exc


def _family_sees(view: BroadcastView, principal: Principal) -> bool:
    units = principal.scope.units
    if units is None:
        return True
    if view.state != SENT:
        return False
    buildings = {building for site, building, _ in units if site == view.site}
    if not buildings:
        return False
    return not view.buildings or bool(buildings.intersection(view.buildings))


async def _send(broadcaster: Broadcaster, view: BroadcastView) -> BroadcastView:
    if view.state != "approved":
        return view
    await broadcaster.send(view.id)
    fresh = await asyncio.to_thread(broadcaster.broadcasts.view, view.id)
    return fresh or view


@v1.post("/broadcasts", status_code=status.HTTP_201_CREATED)
async def compose_broadcast(
    principal: BroadcasterPrincipal,
    broadcaster: BroadcasterDep,
    clock: ClockDep,
    request: Annotated[ComposeRequest, Body()],
) -> BroadcastV1Out:
    """Compose a broadcast: sent at once (state ``sent``), or ``pending`` a second person's
    approval (an Actual broadcast to the whole site without ``override_reason``)."""
    with _http_errors():
        view = await asyncio.to_thread(
            broadcaster.broadcasts.create, request, principal.actor, clock()
        )
        return _v1(await _send(broadcaster, view))


@v1.post("/broadcasts/preview")
async def preview_broadcast(
    principal: BroadcasterPrincipal,
    broadcaster: BroadcasterDep,
    clock: ClockDep,
    request: Annotated[ComposeRequest, Body()],
) -> PreviewOut:
    """What the speakers will say (with the drill prefix), the CAP XML, and whether it needs
    a second person's approval. Nothing is stored or sent."""
    with _http_errors():
        preview = await asyncio.to_thread(broadcaster.broadcasts.preview, request, clock())
    return PreviewOut(
        script=[SaidOut(language=a.language, text=a.text) for a in preview.script],
        spoken="\n".join(a.text for a in preview.script),
        content_hash=preview.content_hash,
        cap_xml=preview.cap_xml,
        needs_approval=preview.needs_approval,
        targeted=preview.targeted,
    )


@v1.get("/broadcasts")
async def list_v1(
    principal: PrincipalDep,
    broadcaster: BroadcasterDep,
    state: Literal["pending", "approved", "sent", "rejected"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[BroadcastV1Out]:
    """Broadcasts, newest first, with how many targeted speakers confirmed."""
    try:
        views = await asyncio.to_thread(
            broadcaster.broadcasts.views, state=state, limit=limit, offset=offset
        )
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return [_v1(v) for v in views if _family_sees(v, principal)]


async def _view_for(
    broadcaster: Broadcaster, broadcast_id: Text, principal: Principal
) -> BroadcastView:
    try:
        view = await asyncio.to_thread(broadcaster.broadcasts.view, broadcast_id)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if view is None or not _family_sees(view, principal):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no broadcast {broadcast_id}")
    return view


@v1.get("/broadcasts/{broadcast_id}")
async def get_v1(
    principal: PrincipalDep, broadcaster: BroadcasterDep, broadcast_id: Text
) -> BroadcastV1Out:
    return _v1(await _view_for(broadcaster, broadcast_id, principal))


@v1.post("/broadcasts/{broadcast_id}/approve")
async def approve_broadcast(
    principal: BroadcasterPrincipal,
    broadcaster: BroadcasterDep,
    clock: ClockDep,
    broadcast_id: Text,
) -> BroadcastV1Out:
    """A second staff member approves a pending broadcast; it is sent at once."""
    with _http_errors():
        view = await asyncio.to_thread(
            broadcaster.broadcasts.approve, broadcast_id, principal.actor, clock()
        )
        return _v1(await _send(broadcaster, view))


@v1.post("/broadcasts/{broadcast_id}/reject")
async def reject_broadcast(
    principal: BroadcasterPrincipal,
    broadcaster: BroadcasterDep,
    clock: ClockDep,
    broadcast_id: Text,
    body: Annotated[RejectIn | None, Body()] = None,
) -> BroadcastV1Out:
    reason = body.reason if body is not None else ""
    with _http_errors():
        view = await asyncio.to_thread(
            broadcaster.broadcasts.reject, broadcast_id, principal.actor, reason, clock()
        )
    return _v1(view)


@v1.post("/broadcasts/{broadcast_id}/cancel", status_code=status.HTTP_201_CREATED)
async def cancel_broadcast(
    principal: BroadcasterPrincipal,
    broadcaster: BroadcasterDep,
    clock: ClockDep,
    broadcast_id: Text,
    body: Annotated[CancelText | None, Body()] = None,
) -> BroadcastV1Out:
    """Send a CAP Cancel of a broadcast to the same speakers; they stop playing it."""
    with _http_errors():
        request = await asyncio.to_thread(
            broadcaster.broadcasts.cancel_request, broadcast_id, body or CancelText()
        )
        view = await asyncio.to_thread(
            broadcaster.broadcasts.create, request, principal.actor, clock()
        )
        return _v1(await _send(broadcaster, view))


async def _coverage_of(broadcaster: Broadcaster, broadcast_id: Text) -> Coverage:
    try:
        coverage = await asyncio.to_thread(broadcaster.broadcasts.coverage, broadcast_id)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if coverage is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no broadcast {broadcast_id}")
    return coverage


@v1.get("/broadcasts/{broadcast_id}/coverage")
async def broadcast_coverage(
    principal: Reader, broadcaster: BroadcasterDep, broadcast_id: Text
) -> CoverageOut:
    """The targeted speakers, those that confirmed (receipt ``played`` with the right content
    hash), those that did not, and the redelivery through each gateway."""
    return _coverage(await _coverage_of(broadcaster, broadcast_id))


async def _coverage_events(
    request: Request, broadcaster: Broadcaster, broadcast_id: Text
) -> AsyncIterator[bytes]:
    last: dict[str, Any] | None = None
    idle = 0.0
    n = 0
    yield b": connected\n\n"
    while not await request.is_disconnected():
        try:
            coverage = await asyncio.to_thread(broadcaster.broadcasts.coverage, broadcast_id)
        except StoreError:
            coverage = None  # the database is away; keep the stream and try again
        if coverage is not None:
            data = _coverage(coverage).model_dump(mode="json")
            if data != last:
                last, idle, n = data, 0.0, n + 1
                yield f"id: {n}\nevent: coverage\ndata: {json.dumps(data)}\n\n".encode()
        await asyncio.sleep(COVERAGE_POLL_S)
        idle += COVERAGE_POLL_S
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield b": keepalive\n\n"


@v1.get("/broadcasts/{broadcast_id}/coverage/stream", response_class=StreamingResponse)
async def coverage_stream(
    request: Request, principal: Reader, broadcaster: BroadcasterDep, broadcast_id: Text
) -> StreamingResponse:
    """Server-sent events: ``event: coverage`` with the coverage, on connect and each change."""
    await _coverage_of(broadcaster, broadcast_id)
    return StreamingResponse(
        _coverage_events(request, broadcaster, broadcast_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@v1.get("/broadcasts/{broadcast_id}/cap.xml", response_class=Response)
async def broadcast_cap(
    principal: Reader, broadcaster: BroadcasterDep, broadcast_id: Text
) -> Response:
    try:
        found = await asyncio.to_thread(broadcaster.broadcasts.cap_xml, broadcast_id)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no CAP for broadcast {broadcast_id}")
    return Response(found[1], media_type=CAP_XML)


@v1.post("/cap/intake")
async def cap_intake(
    request: Request,
    principal: BroadcasterPrincipal,
    intake: CapIntakeDep,
    broadcaster: BroadcasterDep,
    clock: ClockDep,
    site: Annotated[str, Query(pattern=f"^{topics.ID_PATTERN}$")],
) -> IntakeOut:
    """An outside authority's CAP 1.2 (or 1.1) alert, as the request body (XML). Relayed to
    the site's speakers per the relay policy; refused with the reason (422) if unreadable."""
    body = b""
    async for chunk in request.stream():  # bounded: never hold more than CAP allows
        body += chunk
        if len(body) > cap.MAX_CAP_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"a CAP message is at most {cap.MAX_CAP_BYTES} bytes",
            )
    try:
        result = await asyncio.to_thread(
            intake.receive,
            body,
            site=site,
            source=f"post:{principal.actor}",
            actor=principal.actor,
            now=clock(),
        )
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if result.decision == "refused":
        raise HTTPException(422, f"CAP refused: {result.reason}")
    if result.decision == "relayed" and result.broadcast_id is not None:
        await broadcaster.send(result.broadcast_id)
    return IntakeOut(**asdict(result))


@v1.get("/cap/intake")
async def cap_intake_records(
    principal: Reader,
    intake: CapIntakeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[IntakeRecordOut]:
    try:
        found = await asyncio.to_thread(intake.records, limit)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    return [IntakeRecordOut.model_validate(r) for r in found]


# -- public: the CAP Atom feed -------------------------------------------------------------------


@public.get("/{site}/cap.atom", response_class=Response)
async def cap_feed(
    request: Request, broadcaster: BroadcasterDep, clock: ClockDep, site: Text
) -> Response:
    """The site's public warnings (Actual, scope Public, sent; still valid or of the last
    day), newest first, each linking to its CAP XML. Open: public warnings are public."""
    now = clock()
    try:
        found = await asyncio.to_thread(broadcaster.broadcasts.public, site, now)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    feed_url = str(request.url_for("cap_feed", site=site))
    entry_url = str(request.url_for("public_cap", site=site, broadcast_id="ID")).replace(
        "ID.xml", "{id}.xml"
    )
    body = atom(site, found, feed_url=feed_url, entry_url=entry_url, now=now)
    return Response(body, media_type="application/atom+xml")


@public.get("/{site}/cap/{broadcast_id}.xml", response_class=Response)
async def public_cap(
    broadcaster: BroadcasterDep, clock: ClockDep, site: Text, broadcast_id: Text
) -> Response:
    """A public warning's CAP 1.2 XML (404 for anything not in the public feed)."""
    try:
        found = await asyncio.to_thread(broadcaster.broadcasts.cap_xml, broadcast_id)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no public warning {broadcast_id}")
    row, xml = found
    if (row.site, row.status, row.scope, row.state) != (site, "Actual", "Public", SENT):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no public warning {broadcast_id}")
    return Response(xml, media_type=CAP_XML)
