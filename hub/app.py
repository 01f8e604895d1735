"""The hub's FastAPI application, its MQTT intake in the lifespan, and ``serve``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI

from bus import MqttLink
from bus.tasks import stop
from hub.auth import ADMIN, LoginLimiter, hash_password
from hub.broadcast_rows import Redelivery
from hub.broadcasting import Broadcaster
from hub.cap_feed import CapIntake, FeedPoller, RelayPolicy
from hub.clock import Clock, utc_now
from hub.deps import get_principal
from hub.directory import DirectoryError
from hub.errors import ServeError
from hub.intake import AckBatcher, Intake, Pipeline
from hub.retention import start_purging
from hub.routes import (
    alerts,
    auth,
    broadcasts,
    directory,
    events,
    health,
    incidents,
    residents,
    stream,
)
from hub.settings import HubSettings
from hub.store import Store
from hub.timers import Timers
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
        store = await asyncio.to_thread(make_store, settings)
        try:
            await asyncio.to_thread(store.create_schema)
            await asyncio.to_thread(bootstrap_admin, store, settings)
            link = MqttLink(
                settings.broker,
                client_id=settings.client_id,
                subscriptions=subscriptions(settings),
            )
            acks = AckBatcher(link, clock=clock)
            intake = Intake(store, link, clock=clock, acks=acks)
            pipeline = Pipeline(intake, workers=settings.intake_workers)
            timers = Timers(store, settings, clock=clock)
            intake.on_incident = timers.wake
            # The link and the intake need each other; wire them before the link runs.
            link.handler = pipeline.handle
            link.on_connect = intake.on_connect
            app.state.store = store
            app.state.link = link
            app.state.intake = intake
            app.state.timers = timers
            broadcaster = Broadcaster(store, link, clock=clock, tick_s=settings.broadcast_tick_s)
            app.state.broadcaster = broadcaster
            app.state.cap_intake = CapIntake(
                store,
                RelayPolicy(
                    severities=frozenset(settings.cap_relay_severities),
                    urgencies=frozenset(settings.cap_relay_urgencies),
                ),
            )
            feeds: FeedPoller | None = None
            if settings.cap_feed_urls and settings.cap_feed_site:
                feeds = FeedPoller(
                    app.state.cap_intake,
                    broadcaster,
                    settings.cap_feed_urls,
                    settings.cap_feed_site,
                    every_s=settings.cap_feed_poll_s,
                    clock=clock,
                )
            app.state.cap_feeds = feeds
            task = asyncio.create_task(link.run(), name=f"mqtt {settings.client_id}")
            redeliver = asyncio.create_task(broadcaster.run(), name="broadcast redelivery")
            feed_task = asyncio.create_task(feeds.run(), name="cap feeds") if feeds else None
            retry = asyncio.create_task(intake.republish_loop(), name="broadcast retry")
            timer_task = asyncio.create_task(timers.run(), name="hub timers")
            lanes = asyncio.create_task(pipeline.run(), name="intake lanes")
            ack_task = asyncio.create_task(acks.run(), name="acks")
            app.state.retention = start_purging(store, settings.retention, clock=clock, until=task)
            try:
                yield
            finally:
                await stop(lanes)
                await acks.flush()  # what was committed is acked before we go
                await stop(ack_task)
                await stop(timer_task)
                await stop(retry)
                await stop(redeliver)
                if feeds is not None and feed_task is not None:
                    await stop(feed_task)
                    await feeds.aclose()
                await stop(task)
                await timers.aclose()
        finally:
            await asyncio.to_thread(store.close)

    # The OpenAPI docs are open only when authentication is off; otherwise the schema is at
    # /api/v1/openapi.json, for a logged-in caller like everything else.
    open_docs = not settings.auth_required
    app = FastAPI(
        title="Anmin hub",
        lifespan=lifespan,
        openapi_url="/openapi.json" if open_docs else None,
        docs_url="/docs" if open_docs else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.login_limiter = LoginLimiter()
    # /health and logging in are open; every other endpoint needs a valid token.
    app.include_router(health.router)
    app.include_router(auth.login_router)
    app.include_router(broadcasts.public)  # the Atom feed of public warnings, and their CAP
    authenticated = [Depends(get_principal)]
    for router in (
        auth.router,
        alerts.router,
        broadcasts.router,
        broadcasts.v1,
        events.router,
        incidents.router,
        stream.router,
        directory.router,
        residents.router,
    ):
        app.include_router(router, dependencies=authenticated)

    @app.get("/api/v1/openapi.json", dependencies=authenticated, include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    from hub import web  # the web console (hub/web, docs/console.md): pages under /console

    web.install(app)
    return app


def make_store(settings: HubSettings) -> Store:
    store = Store(
        settings.database_url,
        incident_window=timedelta(seconds=settings.incident_window_s),
        gateway_stale_after=timedelta(seconds=settings.gateway_stale_after_s),
        gateway_grace=timedelta(seconds=settings.gateway_grace_s),
    )
    store.redelivery = Redelivery(
        first=timedelta(seconds=settings.broadcast_retry_s),
        longest=max(timedelta(seconds=60), timedelta(seconds=settings.broadcast_retry_s)),
        attempts=settings.broadcast_retries,
        stale_after=timedelta(seconds=settings.gateway_stale_after_s),
    )
    return store


def bootstrap_admin(store: Store, settings: HubSettings) -> None:
    """Create the first administrator from the settings when nobody exists yet."""
    if settings.admin_username is None or settings.admin_password is None:
        return
    if store.count_people() > 0:
        return
    try:
        store.add_person(
            settings.admin_username,
            settings.admin_username,
            ADMIN,
            password_hash=hash_password(settings.admin_password),
        )
    except DirectoryError:
        return  # another hub created it first
    log.info("created the first administrator, %s", settings.admin_username)


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
