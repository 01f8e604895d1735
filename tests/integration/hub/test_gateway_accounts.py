"""Gateway accounts: a gateway (or a fire panel) posts its own alert events over HTTP with
credentials of its own, and can do nothing else."""

from __future__ import annotations

import pytest

from bus.broker import Mosquitto
from hub.directory import DirectoryError, gateway_of
from tests.integration.hub.support import (
    FakeClock,
    add_person,
    app_for,
    app_routes,
    codec,
    event,
    login,
    running,
    settings_for,
    store_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def test_a_gateway_account_is_named_gateway_at_site() -> None:
    assert gateway_of("gw-1@s1") == ("s1", "gw-1")
    for wrong in ("gw-1", "@s1", "gw-1@", "a@b@c"):
        assert gateway_of(wrong) is None


async def test_a_gateway_posts_its_own_events_and_nothing_else(
    mosquitto: Mosquitto, hub_database: str, clock: FakeClock
) -> None:
    app = app_for(settings_for(mosquitto, hub_database), clock)
    async with running(app) as client:
        store = store_of(app)
        add_person(store, "g1@s1", "gateway")
        add_person(store, "staff", "staff")
        with pytest.raises(DirectoryError, match="gateway@site"):
            add_person(store, "panel-7", "gateway")
        headers = await login(client, "g1@s1")

        own = event(clock.now, gateway="g1")
        response = await client.post("/api/v1/events", content=codec.encode(own), headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["stored"] is True

        # One event of another gateway refuses the whole batch: nothing of it is stored.
        mine, theirs = event(clock.now, gateway="g1", key="a"), event(clock.now, gateway="g2")
        batch = b"[" + codec.encode(mine) + b"," + codec.encode(theirs) + b"]"
        response = await client.post("/api/v1/events", content=batch, headers=headers)
        assert response.status_code == 403
        assert "g2@s1" in response.json()["detail"]
        staff = await login(client, "staff")
        stored = {a["id"] for a in (await client.get("/api/alerts", headers=staff)).json()}
        assert stored == {own.id}

        # Every other route refuses the gateway's token, reads and writes alike.
        routes = app_routes(app)
        assert len(routes) > 15
        for method, path in routes:
            if (method, path) == ("POST", "/api/v1/events"):
                continue
            url = path.replace("{", "").replace("}", "")  # any id: refused before it is read
            if (await client.request(method, url)).status_code != 401:
                continue  # open to all (health, login, the public CAP feed): no token needed
            response = await client.request(method, url, headers=headers)
            # The console takes its own session cookie, so a bearer token is not even read.
            refused = {401, 403} if path.startswith("/console") else {403}
            assert response.status_code in refused, (method, path, response.status_code)
