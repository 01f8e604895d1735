"""Every console route, walked as the Li family with a real session cookie, looking for the
Wang family's data: nothing leaks (the console uses the API's scoping). Plain HTTP: the
browser is not needed to prove what the server sends. The route list is checked against the
app, so a new console page fails here until it is listed."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from hub import HubSettings, create_app
from tests.browser.conftest import PASSWORD, SITE, Hub, _wait, alert
from wire import Severity

pytestmark = pytest.mark.integration

# What the Li family gets for each console route asked about the Wang family's data.
CHECKS: dict[tuple[str, str], int | str] = {
    ("GET", "/console"): 303,  # to the family page
    ("GET", "/console/login"): 200,
    ("POST", "/console/login"): "skip",  # logging in again; tested in test_console.py
    ("POST", "/console/logout"): "skip",  # would end the session the walk uses
    ("GET", "/console/board"): 303,  # families are sent to their own page
    ("GET", "/console/stream"): "skip",  # the API's stream, scoped (test_stream.py)
    ("GET", "/console/incidents/{incident_id}"): 404,
    ("POST", "/console/incidents/{incident_id}/acknowledge"): 404,
    ("POST", "/console/incidents/{incident_id}/resolve"): 403,
    ("POST", "/console/incidents/{incident_id}/on-my-way"): 404,
    ("GET", "/console/gateways"): 403,
    ("GET", "/console/family"): 200,
    ("POST", "/console/push/subscriptions"): 422,  # (an empty subscription; test_push.py)
    ("GET", "/console/broadcasts"): 403,
    ("POST", "/console/broadcasts"): 403,
    ("GET", "/console/broadcasts/{broadcast_id}"): 403,
    ("GET", "/console/broadcasts/{broadcast_id}/coverage"): 403,
    ("POST", "/console/broadcasts/{broadcast_id}/approve"): 403,
    ("POST", "/console/broadcasts/{broadcast_id}/reject"): 403,
}


def console_routes() -> list[tuple[str, str]]:
    app = create_app(HubSettings())
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.extend((m, route.path) for m in route.methods or ())
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes)

    walk(app.routes)
    return sorted(r for r in found if r[1].startswith("/console"))


def test_a_family_sees_nothing_of_another_family_on_any_console_route(hub: Hub) -> None:
    assert sorted(CHECKS) == console_routes(), "list every console route in CHECKS"
    sos = alert("sos", "4", "402", severity=Severity.EXTREME)
    hub.publish_alert(sos)
    with hub.api() as api:
        wang_incident = _wait(
            lambda: next(
                (i["id"] for i in api.get("/api/v1/incidents").json() if i["unit"] == "402"), None
            ),
            "an incident in the Wang flat",
        )
        created = api.post(
            "/api/v1/broadcasts",
            json={"site": SITE, "buildings": ["4"],
                  "zh": {"headline": "4号楼停水通知", "description": "4号楼今晚停水。"}},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        wang_broadcast = created.json()["id"]

    with httpx.Client(base_url=hub.url, headers={"Origin": hub.url}) as li:
        login = li.post("/console/login", data={"username": "li-daughter", "password": PASSWORD})
        assert login.status_code == 303
        page = li.get("/console/family")
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert match, "the family page carries a CSRF token"
        csrf = match.group(1)
        secrets = ["王爷爷", "wang-son", "4 号楼 402", "4号楼停水", wang_broadcast]
        for (method, path), expected in CHECKS.items():
            if expected == "skip":
                continue
            url = path.format(incident_id=wang_incident, broadcast_id=wang_broadcast)
            if path == "/console/push/subscriptions":
                response = li.post(url, json={}, headers={"X-CSRF-Token": csrf})
            elif method == "POST":
                response = li.post(url, data={"csrf": csrf, "note": "x", "headline": "x"})
            else:
                response = li.get(url)
            assert response.status_code == expected, (method, path, response.status_code)
            if expected == 303:
                assert response.headers["location"] == "/console/family", path
            for secret in secrets:
                assert secret not in response.text, (path, secret)
        # What the Li family does see: their own relative.
        assert "李奶奶" in li.get("/console/family").text
