"""Helpers for the hub's integration tests: a clock the test moves, logins, seeded people."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute

from bus.broker import Mosquitto
from hub import HubSettings, create_app
from hub.auth import hash_password
from hub.store import Store
from wire import AlertEvent, Codec, Phase, Severity, uuid7

SITE = "s1"
PASSWORD = "correct horse battery"
codec = Codec()


@dataclass
class FakeClock:
    """The hub's time, moved by the test."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 8, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def settings_for(mosquitto: Mosquitto, database_url: str, **overrides: object) -> HubSettings:
    base: dict[str, object] = {
        "broker": mosquitto.broker,
        "database_url": database_url,
        "jwt_secret": "test-secret-of-enough-length-for-hs256",
        "timer_interval_s": 3600.0,  # tests tick the timers themselves
    }
    base.update(overrides)
    return HubSettings(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan, and an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            yield client


def app_for(settings: HubSettings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


def add_person(
    store: Store, username: str, role: str, *, email: str | None = None, phone: str | None = None
) -> int:
    return store.add_person(
        username,
        username.replace("-", " ").title(),
        role,
        password_hash=hash_password(PASSWORD),
        email=email,
        phone=phone,
    )


async def login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def event(
    at: datetime,
    *,
    building: str = "3",
    unit: str = "301",
    kind: str = "gas",
    severity: Severity = Severity.SEVERE,
    phase: Phase = Phase.RAISED,
    gateway: str = "g1",
    key: str | None = None,
    site: str = SITE,
) -> AlertEvent:
    return AlertEvent(
        id=uuid7(int(at.timestamp() * 1000)),
        key=key or f"{kind}:{building}-{unit}",
        phase=phase,
        severity=severity,
        kind=kind,
        rule=f"{kind}_rule",
        site=site,
        gateway=gateway,
        device=f"{kind}-{building}-{unit}",
        building=building,
        unit=unit,
        ts=at,
        evidence={"value": 1.0},
        message=f"{kind} in {building}-{unit}",
    )


def store_of(app: FastAPI) -> Store:
    store: Store = app.state.store
    return store


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn on a free port (streaming needs a real server)."""
    import asyncio

    import uvicorn

    from bus.broker import free_port
    from bus.tasks import stop
    from tests.conftest import wait_for

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait([task], timeout=10)
        await stop(task)


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, including routes of included routers."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.extend((method, route.path) for method in route.methods or ())
            elif hasattr(route, "original_router"):  # FastAPI >= 0.120 keeps routers nested
                walk(route.original_router.routes)

    walk(app.routes)
    return sorted(found)
