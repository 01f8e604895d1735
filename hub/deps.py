"""Dependency aliases for the routes: what a request may use, taken from ``app.state``,
and who is asking (``PrincipalDep``, ``require``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from bus import MqttLink
from hub.auth import ANONYMOUS_ADMIN, GATEWAY, Principal, TokenError, read_token
from hub.clock import Clock
from hub.errors import StoreError
from hub.intake import Intake
from hub.settings import HubSettings
from hub.store import Store

_bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/auth/token")


def get_store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


def get_intake(request: Request) -> Intake:
    return cast(Intake, request.app.state.intake)


def get_link(request: Request) -> MqttLink:
    return cast(MqttLink, request.app.state.link)


def get_settings(request: Request) -> HubSettings:
    return cast(HubSettings, request.app.state.settings)


def get_clock(request: Request) -> Clock:
    return cast(Clock, request.app.state.clock)


StoreDep = Annotated[Store, Depends(get_store)]
IntakeDep = Annotated[Intake, Depends(get_intake)]
LinkDep = Annotated[MqttLink, Depends(get_link)]
SettingsDep = Annotated[HubSettings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]

# The largest integer every hub database takes (PostgreSQL INTEGER). A bigger offset or id would
# fail in the driver (a 500, found by schemathesis) instead of being refused as bad input (422).
MAX_DB_INT = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=MAX_DB_INT)]
RowId = Annotated[int, Path(ge=0, le=MAX_DB_INT)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# Text for the database: PostgreSQL cannot store NUL characters, and the driver's error became
# a 503 "database unavailable" (found by schemathesis on PostgreSQL); it is bad input, a 422.
Text = Annotated[str, AfterValidator(_no_nul)]


# What a gateway account may do over HTTP (hub.directory.GATEWAY).
GATEWAY_MAY = {("POST", "/api/v1/events")}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def get_principal(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    clock: ClockDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from their bearer token; 401 without a valid one."""
    if not settings.auth_required:
        return ANONYMOUS_ADMIN
    if credentials is None:
        raise _unauthorized("authentication required")
    try:
        person_id, username, role = read_token(
            credentials.credentials, secret=settings.jwt_secret, now=clock()
        )
    except TokenError as exc:
        raise _unauthorized(str(exc)) from exc
    if role == GATEWAY and (request.method, request.url.path) not in GATEWAY_MAY:
        # Denied by default, here rather than route by route: a route added later cannot
        # forget it, and a gateway's stolen credentials read nothing.
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a gateway account may only post events")
    try:
        person = await asyncio.to_thread(store.person, person_id)
        if person is None or not person.active or person.role != role:
            # Deleted, deactivated or moved to another role since the token was issued.
            raise _unauthorized("the token's person no longer has that access")
        scope = await asyncio.to_thread(store.scope_of, person_id, role)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    return Principal(person_id=person_id, username=username, role=role, scope=scope)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only these roles through (403 for the others)."""

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{principal.role} may not do this")
        return principal

    return check


def unavailable(exc: StoreError) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")
