"""Who is looking at a console page: the hub's own token, kept in an HttpOnly cookie.

Why a cookie and not sessionStorage: the live board uses ``EventSource``, which cannot send an
``Authorization`` header, and an HttpOnly cookie is out of reach of any script that might slip
into a page (the pages also send a strict Content-Security-Policy). The cookie holds the same
HS256 JWT that ``POST /api/v1/auth/token`` gives, and is checked by the API's own
``get_principal`` (signature, expiry, person still active with that role, family scope).

Cross-site request forgery is stopped three ways: the cookie is ``SameSite=Strict`` and
scoped to ``/console`` (the JSON API never accepts it: it wants a bearer header); every form
carries a token that is an HMAC of the session token under the hub's secret, checked in
constant time; and a POST whose ``Origin`` is another site is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from hub.auth import Principal
from hub.clock import Clock
from hub.deps import get_principal
from hub.settings import HubSettings
from hub.store import Store
from hub.web import i18n

COOKIE = "anmin_console"
LANG_COOKIE = "anmin_lang"
PATH = "/console"
MAX_FORM_BYTES = 16 * 1024


class LoginRequired(Exception):
    """No valid session: the handler answers 401 with the login page."""


class FormRejected(Exception):
    """A POST without a valid CSRF token or from another origin (403)."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """A logged-in person looking at the console, in their language."""

    principal: Principal
    csrf: str
    language: str

    @property
    def t(self) -> i18n.Translate:
        return i18n.translator(self.language)


def language_of(request: Request) -> str:
    return i18n.pick(request.query_params.get("lang") or request.cookies.get(LANG_COOKIE))


def csrf_for(settings: HubSettings, session_token: str) -> str:
    return hmac.new(
        settings.jwt_secret.encode(), b"csrf:" + session_token.encode(), hashlib.sha256
    ).hexdigest()


async def viewer(request: Request) -> Viewer:
    """The logged-in viewer, from the session cookie; ``LoginRequired`` otherwise."""
    app_state = request.app.state
    settings = cast(HubSettings, app_state.settings)
    token = request.cookies.get(COOKIE, "")
    if settings.auth_required and not token:
        raise LoginRequired
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    try:
        principal = await get_principal(
            request,
            settings,
            cast(Store, app_state.store),
            cast(Clock, app_state.clock),
            credentials,
        )
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginRequired from exc
        raise
    return Viewer(principal, csrf_for(settings, token), language_of(request))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", request.url.netloc)


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form (the console's only kind), first value of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "form too large")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


async def checked_form(request: Request, who: Viewer) -> dict[str, str]:
    """The form of a logged-in POST, after the origin and CSRF checks."""
    form = await read_form(request)
    if not same_origin(request) or not hmac.compare_digest(form.get("csrf", ""), who.csrf):
        raise FormRejected
    return form


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if target and target.startswith(PATH) and not target.startswith("//") and "\\" not in target:
        return target
    return PATH
