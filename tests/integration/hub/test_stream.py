"""The live stream of incidents (server-sent events), through a real HTTP server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bus.broker import Mosquitto
from bus.tasks import stop
from tests.conftest import wait_for
from tests.integration.hub.support import (
    FakeClock,
    add_person,
    app_for,
    codec,
    event,
    login,
    served,
    settings_for,
    sqlite_url,
    store_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Listener:
    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.connected = asyncio.Event()

    async def run(self) -> None:
        async with self.client.stream(
            "GET", "/api/v1/stream/incidents", headers=self.headers, timeout=None
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id = 0
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    self.events.append((event_id, json.loads(line[6:])))

    def seen(self) -> list[tuple[str, str | None]]:
        return [(e["action"], e["incident"]["unit"]) for _, e in self.events]


async def test_the_stream_shows_each_caller_only_what_they_may_see(
    mosquitto: Mosquitto, tmp_path: Any
) -> None:
    clock = FakeClock()
    app = app_for(settings_for(mosquitto, sqlite_url(tmp_path)), clock)
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        store = store_of(app)
        add_person(store, "installer", "installer")
        add_person(store, "staff", "staff")
        daughter = add_person(store, "li-daughter", "family")
        store.link_family(daughter, store.add_resident("Grandma Li", "s1", "3", "301"))
        unauthenticated = await client.get("/api/v1/stream/incidents")
        assert unauthenticated.status_code == 401

        staff = Listener(client, await login(client, "staff"))
        family = Listener(client, await login(client, "li-daughter"))
        tasks = [asyncio.create_task(listener.run()) for listener in (staff, family)]
        try:
            await asyncio.wait_for(staff.connected.wait(), 10)
            await asyncio.wait_for(family.connected.wait(), 10)
            installer = await login(client, "installer")
            for unit, building in (("401", "4"), ("301", "3")):
                e = event(clock.now, building=building, unit=unit, kind="fall")
                response = await client.post(
                    "/api/v1/events", content=codec.encode(e), headers=installer
                )
                assert response.status_code == 200
            await wait_for(lambda: len(staff.seen()) >= 2, what="staff to see both incidents")
            await wait_for(lambda: ("incident.opened", "301") in family.seen(), what="family")
            mine = next(i.id for i in store.incidents() if i.unit == "301")
            await client.post(f"/api/v1/incidents/{mine}/acknowledge", headers=family.headers)
            await wait_for(
                lambda: ("incident.acknowledged", "301") in family.seen(), what="the ack"
            )
            assert all(unit == "301" for _, unit in family.seen())
            assert ("incident.opened", "401") in staff.seen()
        finally:
            for task in tasks:
                await stop(task)

        # A client that reconnects with Last-Event-ID gets what it missed.
        first_id = staff.events[0][0]
        again = Listener(client, {**staff.headers, "Last-Event-ID": str(first_id)})
        task = asyncio.create_task(again.run())
        try:
            await wait_for(lambda: len(again.events) >= len(staff.events) - 1, what="a replay")
            # The same changes, by id and action (each carries the incident as it is now).
            replayed = [(i, e["action"]) for i, e in again.events][: len(staff.events) - 1]
            assert replayed == [(i, e["action"]) for i, e in staff.events[1:]]
        finally:
            await stop(task)
