"""The console's pages: server-rendered HTML (Jinja2), forms that POST, one live stream."""

from __future__ import annotations

import asyncio
import hmac
import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from hub import push
from hub.auth import ADMIN, COMMITTEE, FAMILY, INSTALLER, STAFF
from hub.clock import Clock
from hub.incidents import IncidentRecord, IncidentStateError, UnknownIncident
from hub.push import Vapid
from hub.routes import auth as auth_routes
from hub.routes import stream as stream_routes
from hub.settings import HubSettings
from hub.store import Store
from hub.web import i18n, views
from hub.web.session import (
    COOKIE,
    LANG_COOKIE,
    MAX_FORM_BYTES,
    PATH,
    FormRejected,
    Viewer,
    checked_form,
    language_of,
    read_form,
    safe_next,
    same_origin,
    viewer,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"

router = APIRouter(prefix=PATH, include_in_schema=False)
ViewerDep = Annotated[Viewer, Depends(viewer)]

BOARD_ROLES = (ADMIN, STAFF, COMMITTEE, INSTALLER)
RESOLVE_ROLES = (ADMIN, STAFF, COMMITTEE)
# Scripts, styles and fonts only from the hub itself: nothing inline, no other site, no frames.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = _when
templates.globals["label"] = i18n.label
templates.globals["is_life_safety"] = views.is_life_safety


def _store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


def _now(request: Request) -> datetime:
    return cast(Clock, request.app.state.clock)()


def render(
    request: Request,
    template: str,
    who: Viewer | None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    language = who.language if who else language_of(request)
    t = i18n.translator(language)
    other = next(code for code in i18n.LANGUAGES if code != language)
    html = templates.get_template(template).render(
        request=request,
        who=who,
        t=t,
        lang=language,
        other_lang=other,
        path=request.url.path,
        # The catalogue for the page's script, in a JSON block (the CSP allows no inline code).
        messages_json=json.dumps(i18n.MESSAGES[language], ensure_ascii=False).replace("</", "<\\/"),
        **context,
    )
    response = HTMLResponse(html, status_code, headers={**SECURITY_HEADERS, **(headers or {})})
    if "lang" in request.query_params:
        response.set_cookie(
            LANG_COOKIE, language, max_age=365 * 86400, path=PATH, samesite="strict"
        )
    return response


def problem(
    request: Request, who: Viewer | None, status_code: int, message: str, back: str = PATH
) -> HTMLResponse:
    return render(request, "error.html", who, status_code=status_code, message=message, back=back)


def login_page(
    request: Request, status_code: int, message: str | None, next_path: str
) -> HTMLResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return render(
        request,
        "login.html",
        None,
        status_code=status_code,
        headers=headers,
        message=message,
        next_path=next_path,
    )


async def login_required(request: Request, exc: Exception) -> Response:
    """Any console URL without a valid session: 401 with the login form (and back after)."""
    t = i18n.translator(language_of(request))
    target = request.url.path if request.method == "GET" else PATH
    return login_page(request, 401, t("login.required"), safe_next(target))


async def form_rejected(request: Request, exc: Exception) -> Response:
    t = i18n.translator(language_of(request))
    return problem(request, None, 403, t("error.csrf"))


class PageError(Exception):
    """A console request that cannot be served: shown as a page, not as JSON."""

    def __init__(self, who: Viewer, status_code: int, message: str) -> None:
        super().__init__(message)
        self.who = who
        self.status_code = status_code
        self.message = message


async def page_error(request: Request, exc: Exception) -> Response:
    error = cast(PageError, exc)
    return problem(request, error.who, error.status_code, error.message)


def _allow(who: Viewer, roles: tuple[str, ...]) -> None:
    if who.principal.role not in roles:
        raise PageError(who, status.HTTP_403_FORBIDDEN, who.t("error.forbidden"))


@router.get("")
async def home(who: ViewerDep) -> RedirectResponse:
    target = "/family" if who.principal.role == FAMILY else "/board"
    return RedirectResponse(PATH + target, status.HTTP_303_SEE_OTHER)


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return login_page(request, 200, None, safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    """The hub's own login (argon2, rate limit); the token goes into an HttpOnly cookie."""
    t = i18n.translator(language_of(request))
    form = await read_form(request)
    target = safe_next(form.get("next"))
    if not same_origin(request):
        return problem(request, None, 403, t("error.csrf"))
    app_state = request.app.state
    settings = cast(HubSettings, app_state.settings)
    try:
        body = auth_routes.Login(
            username=form.get("username", ""), password=form.get("password", "")
        )
    except ValidationError:
        return login_page(request, 400, t("login.missing"), target)
    try:
        token = await auth_routes.login(
            body, request, _store(request), settings, cast(Clock, app_state.clock)
        )
    except HTTPException as exc:
        if exc.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
            seconds = (exc.headers or {}).get("Retry-After", "60")
            return login_page(request, 429, t("login.limited", seconds=seconds), target)
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            return login_page(request, 401, t("login.failed"), target)
        return login_page(request, exc.status_code, t("login.unavailable"), target)
    if target == PATH:
        target = PATH + ("/family" if token.role == FAMILY else "/board")
    response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        token.access_token,
        max_age=token.expires_in,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, who: ViewerDep) -> RedirectResponse:
    await checked_form(request, who)
    response = RedirectResponse(PATH + "/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
    return response


@router.get("/board")
async def board(request: Request, who: ViewerDep) -> Response:
    if who.principal.role == FAMILY:
        return RedirectResponse(PATH + "/family", status.HTTP_303_SEE_OTHER)
    _allow(who, BOARD_ROLES)
    data = await asyncio.to_thread(views.board, _store(request), who.principal.scope)
    return render(
        request,
        "board.html",
        who,
        board=data,
        can_resolve=who.principal.role in RESOLVE_ROLES,
        placeholder=views.PLACEHOLDER,
    )


@router.get("/stream")
async def stream(
    request: Request,
    who: ViewerDep,
    after: int | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The API's incident stream for a cookie session; starts after the page's audit id."""
    if last_event_id is None and after is not None:
        last_event_id = str(max(after, 0))
    return await stream_routes.incident_stream(
        request, _store(request), who.principal, last_event_id
    )


async def _incident(request: Request, who: Viewer, incident_id: str) -> IncidentRecord:
    record = await asyncio.to_thread(_store(request).incident, incident_id, who.principal.scope)
    if record is None:
        raise PageError(who, status.HTTP_404_NOT_FOUND, who.t("error.not_found"))
    return record


@router.get("/incidents/{incident_id}")
async def incident(request: Request, who: ViewerDep, incident_id: str) -> HTMLResponse:
    record = await _incident(request, who, incident_id)
    data = await asyncio.to_thread(
        partial(
            views.timeline,
            _store(request),
            record,
            with_deliveries=who.principal.role != FAMILY,
        )
    )
    return render(
        request,
        "incident.html",
        who,
        timeline=data,
        can_resolve=who.principal.role in RESOLVE_ROLES,
        back=PATH + ("/family" if who.principal.role == FAMILY else "/board"),
    )


async def _change(request: Request, who: Viewer, incident_id: str, action: str) -> Response:
    form = await checked_form(request, who)
    store = _store(request)
    principal = who.principal
    now = _now(request)
    back = safe_next(form.get("next"))
    note = form.get("note", "").strip()[:500]
    try:
        if action == "acknowledge":
            _allow(who, (*BOARD_ROLES, FAMILY))
            await asyncio.to_thread(
                store.acknowledge_incident, incident_id, principal.actor, now, principal.scope
            )
        elif action == "resolve":
            _allow(who, RESOLVE_ROLES)
            await asyncio.to_thread(
                store.resolve_incident, incident_id, principal.actor, now, principal.scope, note
            )
        else:
            await asyncio.to_thread(_on_my_way, store, who, incident_id, now, note)
    except UnknownIncident:
        return problem(request, who, 404, who.t("error.not_found"), back)
    except IncidentStateError as exc:
        return problem(request, who, 409, who.t("error.state", reason=str(exc)), back)
    return RedirectResponse(back, status.HTTP_303_SEE_OTHER)


def _on_my_way(store: Store, who: Viewer, incident_id: str, now: datetime, note: str) -> None:
    """A family member says they are coming: it acknowledges an open incident (escalation
    stops) and is always written to the audit log, where staff see it on the timeline."""
    principal = who.principal
    record = store.incident(incident_id, principal.scope)
    if record is None:
        raise UnknownIncident(f"no incident {incident_id}")
    if record.state == "resolved":
        raise IncidentStateError(f"incident {incident_id} is already resolved")
    if record.state == "open":
        store.acknowledge_incident(incident_id, principal.actor, now, principal.scope)
    store.append_audit(
        now, principal.actor, "incident.on_the_way", "incident", incident_id,
        site=record.site, note=note,
    )  # fmt: skip


@router.post("/incidents/{incident_id}/acknowledge")
async def acknowledge(request: Request, who: ViewerDep, incident_id: str) -> Response:
    return await _change(request, who, incident_id, "acknowledge")


@router.post("/incidents/{incident_id}/resolve")
async def resolve(request: Request, who: ViewerDep, incident_id: str) -> Response:
    return await _change(request, who, incident_id, "resolve")


@router.post("/incidents/{incident_id}/on-my-way")
async def on_my_way(request: Request, who: ViewerDep, incident_id: str) -> Response:
    return await _change(request, who, incident_id, "on_my_way")


@router.get("/gateways")
async def gateways(request: Request, who: ViewerDep) -> HTMLResponse:
    _allow(who, BOARD_ROLES)
    data = await asyncio.to_thread(views.gateway_health, _store(request), _now(request))
    return render(request, "gateways.html", who, buildings=data, now=_now(request))


@router.get("/family")
async def family(request: Request, who: ViewerDep) -> HTMLResponse:
    store = _store(request)
    after = await asyncio.to_thread(store.latest_audit_id)
    data = await asyncio.to_thread(views.family, store, who.principal.scope, _now(request))
    open_ids = [i.id for r in data for i in r.open_incidents]
    coming = await asyncio.to_thread(views.on_the_way, store, open_ids)
    vapid: Vapid | None = getattr(request.app.state, "vapid", None)
    return render(
        request,
        "family.html",
        who,
        relatives=data,
        on_the_way=coming,
        after=after,
        push_key=vapid.public_key if vapid else None,
    )


@router.post("/push/subscriptions", status_code=201)
async def push_subscribe(request: Request, who: ViewerDep) -> dict[str, str]:
    """The family page's script stores this browser's push subscription (JSON body; the CSRF
    token in ``X-CSRF-Token``)."""
    if not same_origin(request) or not hmac.compare_digest(
        request.headers.get("x-csrf-token", ""), who.csrf
    ):
        raise FormRejected
    if who.principal.role != FAMILY:
        raise PageError(who, status.HTTP_403_FORBIDDEN, who.t("error.forbidden"))
    if getattr(request.app.state, "vapid", None) is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "web push is not configured on this hub")
    body = await request.body()
    try:
        subscription = push.Subscription.parse(json.loads(body[:MAX_FORM_BYTES] or b"null"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"bad push subscription: {exc}"
        ) from exc
    await asyncio.to_thread(
        push.save_subscription, _store(request), who.principal.person_id, subscription,
        _now(request),
    )  # fmt: skip
    return {"endpoint": subscription.endpoint}


def describe(incident: IncidentRecord) -> tuple[str, str]:
    """A push notice's title and text, in Chinese (the families' default language)."""
    t = i18n.translator(i18n.DEFAULT)
    where = (
        t("incident.place", building=incident.building, unit=incident.unit)
        if incident.building and incident.unit
        else t("incident.place.site")
    )
    title = f"{i18n.label(t, 'sev', incident.severity)}：{i18n.label(t, 'kind', incident.kind)}"
    return title, f"{where} · {incident.message}"
