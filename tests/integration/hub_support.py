"""Helpers for tests that run the hub in-process against a real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from bus.broker import Mosquitto
from hub import HubSettings, create_app
from tests.conftest import wait_for


def hub_app(mosquitto: Mosquitto, tmp_path: Path) -> FastAPI:
    settings = HubSettings(
        broker=mosquitto.broker,
        database_url=f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        client_id="test-hub",
        auth_required=False,  # these tests are about the alarm path, not about logging in
    )
    return create_app(settings)


@asynccontextmanager
async def hub_running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            await wait_for(
                lambda: app.state.link.connected.is_set(), what="the hub's MQTT connection"
            )
            yield client
