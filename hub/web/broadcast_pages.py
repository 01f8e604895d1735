"""Broadcast pages: the composer with the spoken preview, the approval queue, and a live view
of a broadcast's coverage. Every action goes through the broadcast API's own functions
(``hub.routes.broadcasts``), so the console has exactly the API's rules, checks and audit."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

from fastapi import HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from hub.auth import ADMIN, COMMITTEE, STAFF
from hub.broadcasting import Broadcaster, ComposeRequest, Text
from hub.clock import Clock
from hub.routes import broadcasts as api
from hub.web.pages import PageError, ViewerDep, _allow, render, router
from hub.web.session import PATH, Viewer, checked_form

READERS = (ADMIN, STAFF, COMMITTEE)
BROADCASTERS = (ADMIN, STAFF)
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor")
STATUSES = ("Actual", "Exercise", "Test")
DEFAULT_SITE = "s1"


def _broadcaster(request: Request) -> Broadcaster:
    return cast(Broadcaster, request.app.state.broadcaster)


def _clock(request: Request) -> Clock:
    return cast(Clock, request.app.state.clock)


def _refused(who: Viewer, exc: HTTPException) -> PageError:
    """The API's refusal (its status and reason), as a console page."""
    return PageError(who, exc.status_code, who.t("error.state", reason=str(exc.detail)))


async def _page(
    request: Request, who: Viewer, *, form: dict[str, str] | None = None, **context: Any
) -> Response:
    broadcaster = _broadcaster(request)
    pending = await api.list_v1(who.principal, broadcaster, state="pending", limit=50, offset=0)
    recent = await api.list_v1(who.principal, broadcaster, state=None, limit=20, offset=0)
    sites = await asyncio.to_thread(_sites, request)
    return render(
        request,
        "broadcasts.html",
        who,
        pending=pending,
        recent=recent,
        form=form or {"site": sites[0] if sites else DEFAULT_SITE, "severity": "Severe"},
        sites=sites,
        severities=SEVERITIES,
        statuses=STATUSES,
        may_broadcast=who.principal.role in BROADCASTERS,
        **context,
    )


def _sites(request: Request) -> list[str]:
    """The sites the hub knows (from its gateways and residents), for the composer."""
    store = request.app.state.store
    found = {g.site for g in store.gateways()} | {r.site for r in store.residents()}
    return sorted(found)


@router.get("/broadcasts")
async def broadcasts(request: Request, who: ViewerDep) -> Response:
    _allow(who, READERS)
    return await _page(request, who)


def _compose_request(form: dict[str, str]) -> ComposeRequest:
    buildings = [b.strip() for b in form.get("buildings", "").replace("，", ",").split(",")]
    en: Text | None = None
    if form.get("en_headline", "").strip() or form.get("en_text", "").strip():
        en = Text(headline=form.get("en_headline", ""), description=form.get("en_text", ""))
    return ComposeRequest(
        site=form.get("site", DEFAULT_SITE),
        status=form.get("status", "Actual"),  # type: ignore[arg-type]  # validated by pydantic
        severity=form.get("severity", "Severe"),  # type: ignore[arg-type]
        buildings=[b for b in buildings if b],
        zh=Text(
            headline=form.get("headline", ""),
            description=form.get("text", ""),
            instruction=form.get("instruction", ""),
        ),
        en=en,
        repeat=int(form.get("repeat", "2") or 2),
    )


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


@router.post("/broadcasts")
async def compose(request: Request, who: ViewerDep) -> Response:
    """``intent=preview``: the page again with what the speakers will say; ``intent=submit``:
    compose it (sent at once, or pending a second person's approval)."""
    form = await checked_form(request, who)
    _allow(who, BROADCASTERS)
    broadcaster = _broadcaster(request)
    clock = _clock(request)
    try:
        await api.may_broadcast(request, who.principal, broadcaster, clock)
        body = _compose_request(form)
    except HTTPException as exc:
        raise _refused(who, exc) from exc
    except (ValidationError, ValueError) as exc:
        message = _problems(exc) if isinstance(exc, ValidationError) else str(exc)
        return await _page(request, who, form=form, error=message)
    try:
        if form.get("intent") == "preview":
            preview = await api.preview_broadcast(who.principal, broadcaster, clock, body)
            return await _page(request, who, form=form, preview=preview)
        created = await api.compose_broadcast(who.principal, broadcaster, clock, body)
    except HTTPException as exc:
        return await _page(request, who, form=form, error=str(exc.detail))
    return RedirectResponse(f"{PATH}/broadcasts/{created.id}", status.HTTP_303_SEE_OTHER)


@router.get("/broadcasts/{broadcast_id}")
async def broadcast(request: Request, who: ViewerDep, broadcast_id: str) -> Response:
    _allow(who, READERS)
    broadcaster = _broadcaster(request)
    try:
        view = await api.get_v1(who.principal, broadcaster, broadcast_id)
        coverage = await api.broadcast_coverage(who.principal, broadcaster, broadcast_id)
    except HTTPException as exc:
        raise _refused(who, exc) from exc
    return render(
        request,
        "broadcast.html",
        who,
        b=view,
        coverage=coverage,
        may_broadcast=who.principal.role in BROADCASTERS,
        now=_clock(request)(),
        recent_window=timedelta(hours=1),
    )


@router.get("/broadcasts/{broadcast_id}/coverage")
async def coverage(request: Request, who: ViewerDep, broadcast_id: str) -> StreamingResponse:
    """The API's live coverage stream (``event: coverage``) for a console session."""
    _allow(who, READERS)
    try:
        return await api.coverage_stream(
            request, who.principal, _broadcaster(request), broadcast_id
        )
    except HTTPException as exc:
        raise _refused(who, exc) from exc


async def _decide(request: Request, who: Viewer, broadcast_id: str, approve: bool) -> Response:
    form = await checked_form(request, who)
    _allow(who, BROADCASTERS)
    broadcaster = _broadcaster(request)
    clock = _clock(request)
    try:
        await api.may_broadcast(request, who.principal, broadcaster, clock)
        if approve:
            await api.approve_broadcast(who.principal, broadcaster, clock, broadcast_id)
        else:
            reason = api.RejectIn(reason=form.get("reason", "")[:500])
            await api.reject_broadcast(who.principal, broadcaster, clock, broadcast_id, reason)
    except HTTPException as exc:
        raise _refused(who, exc) from exc
    return RedirectResponse(f"{PATH}/broadcasts/{broadcast_id}", status.HTTP_303_SEE_OTHER)


@router.post("/broadcasts/{broadcast_id}/approve")
async def approve(request: Request, who: ViewerDep, broadcast_id: str) -> Response:
    return await _decide(request, who, broadcast_id, approve=True)


@router.post("/broadcasts/{broadcast_id}/reject")
async def reject(request: Request, who: ViewerDep, broadcast_id: str) -> Response:
    return await _decide(request, who, broadcast_id, approve=False)
