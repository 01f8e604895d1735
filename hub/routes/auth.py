"""Logging in: a username and password give a signed, expiring bearer token."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import cast

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from hub.auth import (
    LoginLimiter,
    hash_password,
    issue_token,
    needs_rehash,
    verify_password,
)
from hub.deps import ClockDep, PrincipalDep, SettingsDep, StoreDep, Text
from hub.errors import StoreError

login_router = APIRouter(prefix="/api/v1", tags=["auth"])  # open: this is how one gets in
router = APIRouter(prefix="/api/v1", tags=["auth"])


class Login(BaseModel):
    username: Text = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the OAuth 2 token type, not a secret)
    expires_in: int
    role: str


class Me(BaseModel):
    person_id: int
    username: str
    role: str
    # A family member's relatives' places as [site, building, unit]; None: everything.
    scope: list[tuple[str, str, str]] | None


@login_router.post("/auth/token")
async def login(
    body: Login, request: Request, store: StoreDep, settings: SettingsDep, clock: ClockDep
) -> Token:
    """Exchange a username and password for a bearer token (rate limited on failures)."""
    limiter = cast(LoginLimiter, request.app.state.login_limiter)
    address = request.client.host if request.client else "unknown"
    keys = (f"user:{body.username}", f"addr:{address}")
    now = clock()
    wait = limiter.retry_after(keys, now)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    try:
        found = await asyncio.to_thread(store.person_login, body.username)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable") from exc
    password_hash = found[1] if found else None
    ok = await asyncio.to_thread(verify_password, password_hash, body.password)
    if found is None or not ok or password_hash is None:
        limiter.failed(keys, now)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    person = found[0]
    limiter.succeeded(keys)
    if needs_rehash(password_hash):
        new_hash = await asyncio.to_thread(hash_password, body.password)
        await asyncio.to_thread(store.set_password_hash, person.id, new_hash)
    ttl = timedelta(seconds=settings.token_ttl_s)
    token = issue_token(
        person.id, person.username, person.role, secret=settings.jwt_secret, now=now, ttl=ttl
    )
    return Token(access_token=token, expires_in=settings.token_ttl_s, role=person.role)


@router.get("/me")
async def me(principal: PrincipalDep) -> Me:
    units = principal.scope.units
    return Me(
        person_id=principal.person_id,
        username=principal.username,
        role=principal.role,
        scope=None if units is None else sorted(units),
    )
