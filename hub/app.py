"""The hub's FastAPI application, its MQTT intake in the lifespan, and ``serve``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from bus import MqttLink
from bus.tasks import stop
from hub.clock import Clock, utc_now
from hub.errors import ServeError
from hub.intake import Intake
from hub.routes import alerts, broadcasts, health
from hub.settings import HubSettings
from hub.store import Store
from wire import topics
from wire.topics import Channel

log = logging.getLogger(__name__)

# The gateway channels the hub reads. QoS 1 end to end: alerts and receipts must not be lost.
HUB_CHANNELS = (Channel.ALERT, Channel.RECEIPT, Channel.HEARTBEAT, Channel.DEADLETTER)


def subscriptions(settings: HubSettings) -> list[tuple[str, int]]:
    return [
        (topics.hub_filter(channel, shared=settings.shared_subscription), 1)
        for channel in HUB_CHANNELS
    ]


def create_app(settings: HubSettings, *, clock: Clock = utc_now) -> FastAPI:
    """The hub app. Its lifespan opens the store, runs the MQTT link, and closes both.

    ``app.state`` holds ``settings``, and during the lifespan ``store``, ``link``, ``intake``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(Store, settings.database_url)
        try:
            await asyncio.to_thread(store.create_schema)
            link = MqttLink(
                settings.broker,
                client_id=settings.client_id,
                subscriptions=subscriptions(settings),
            )
            intake = Intake(store, link, clock=clock)
            # The link and the intake need each other; wire them before the link runs.
            link.handler = intake.handle
            link.on_connect = intake.on_connect
            app.state.store = store
            app.state.link = link
            app.state.intake = intake
            task = asyncio.create_task(link.run(), name=f"mqtt {settings.client_id}")
            retry = asyncio.create_task(intake.republish_loop(), name="broadcast retry")
            try:
                yield
            finally:
                await stop(retry)
                await stop(task)
        finally:
            await asyncio.to_thread(store.close)

    app = FastAPI(title="Anmin hub", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(alerts.router)
    app.include_router(broadcasts.router)
    return app


async def serve(settings: HubSettings, *, clock: Clock = utc_now) -> None:
    """Run the hub's HTTP server and MQTT intake until cancelled (or a signal stops uvicorn).

    On cancellation uvicorn is asked to exit and given the time to run the lifespan's shutdown,
    so the MQTT link and the database are closed before this returns.
    """
    config = uvicorn.Config(
        create_app(settings, clock=clock),
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        log_config=None,  # the caller (CLI, demo) configures logging, not uvicorn
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(_serve(server, settings), name="hub http")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await asyncio.wait([task])
        raise


async def _serve(server: uvicorn.Server, settings: HubSettings) -> None:
    where = f"{settings.http_host}:{settings.http_port}"
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits the process when it cannot bind or the lifespan fails to start.
        raise ServeError(f"the hub could not start on {where} (see the log)") from exc
    if not server.started:
        raise ServeError(f"the hub could not start on {where} (see the log)")
