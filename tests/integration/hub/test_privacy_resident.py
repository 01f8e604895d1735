"""A resident's data on request: export contains theirs and no one else's; erasure leaves nothing
personal (every cell of the database is scanned) while the safety record stays, anonymised,
and other residents' data is untouched. Admins only. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI

from bus.broker import Mosquitto
from hub.store import Store
from hub.tables import DeliveryRow
from tests.integration.hub.support import (
    FakeClock,
    add_person,
    app_for,
    codec,
    event,
    login,
    running,
    settings_for,
    store_of,
)
from tests.integration.hub.test_privacy_hub_db import every_cell, found

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# What identifies Grandma Li and her daughter; none of it may survive her erasure.
LI_PERSONAL = {"Grandma Li", "li-daughter", "Li Daughter", "li@example.org", "+8613800000001"}
LI_EVIDENCE = 38.0625  # a vital-signs value in her alert's evidence
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WANG_PERSONAL = {"Mr Wang", "wang-son", "wang@example.org", "+8613800000002"}


@dataclass
class World:
    app: FastAPI
    client: httpx.AsyncClient
    database_url: str
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)


def delivery(store: Store, incident_id: str, person_id: int, clock: FakeClock) -> None:
    with store.writing() as session:
        session.add(
            DeliveryRow(
                incident_id=incident_id,
                notice="tier:0",
                person_id=person_id,
                channel="email",
                status="sent",
                attempts=1,
                next_attempt_at=clock.now,
                created_at=clock.now,
                sent_at=clock.now,
            )
        )


@pytest.fixture
async def world(mosquitto: Mosquitto, hub_database: str, clock: FakeClock) -> AsyncIterator[World]:
    app = app_for(settings_for(mosquitto, hub_database), clock)
    async with running(app) as client:
        store = store_of(app)
        w = World(app, client, hub_database)
        w.ids["admin"] = add_person(store, "admin", "admin")
        w.ids["staff"] = add_person(store, "staff", "staff")
        w.ids["li-daughter"] = add_person(
            store, "li-daughter", "family", email="li@example.org", phone="+8613800000001"
        )
        w.ids["wang-son"] = add_person(
            store, "wang-son", "family", email="wang@example.org", phone="+8613800000002"
        )
        w.ids["li"] = store.add_resident("Grandma Li", "s1", "3", "301")
        w.ids["wang"] = store.add_resident("Mr Wang", "s1", "4", "401")
        store.link_family(w.ids["li-daughter"], w.ids["li"])
        store.link_family(w.ids["wang-son"], w.ids["wang"])
        store.add_device("s1", "g1", "watch-301", "wearable", building="3", unit="301")
        for username in ("admin", "staff", "li-daughter"):
            w.headers[username] = await login(client, username)
        li_fall = msgspec.structs.replace(
            event(clock.now, building="3", unit="301", kind="vital_signs"),
            device="watch-301",
            evidence={"heart_rate_bpm": LI_EVIDENCE},
        )
        wang_gas = event(clock.now, building="4", unit="401", kind="gas")
        for e in (li_fall, wang_gas):
            sent = await client.post(
                "/api/v1/events", content=codec.encode(e), headers=w.headers["admin"]
            )
            assert sent.status_code == 200, sent.text
        incidents = (await client.get("/api/v1/incidents", headers=w.headers["admin"])).json()
        w.ids["li_incident"] = next(i["id"] for i in incidents if i["building"] == "3")
        w.ids["wang_incident"] = next(i["id"] for i in incidents if i["building"] == "4")
        delivery(store, w.ids["li_incident"], w.ids["li-daughter"], clock)
        delivery(store, w.ids["wang_incident"], w.ids["wang-son"], clock)
        yield w


async def test_only_an_admin_may_export_or_erase(world: World) -> None:
    li = world.ids["li"]
    for who in ("staff", "li-daughter"):
        headers = world.headers[who]
        export = await world.client.get(f"/api/v1/residents/{li}/export", headers=headers)
        erase = await world.client.post(f"/api/v1/residents/{li}/erase", headers=headers)
        assert (export.status_code, erase.status_code) == (403, 403), who
    assert (await world.client.get(f"/api/v1/residents/{li}/export")).status_code == 401
    missing = await world.client.get(
        "/api/v1/residents/9999/export", headers=world.headers["admin"]
    )
    assert missing.status_code == 404 and "no resident 9999" in missing.text


async def test_the_export_holds_their_data_and_no_one_elses(world: World) -> None:
    response = await world.client.get(
        f"/api/v1/residents/{world.ids['li']}/export", headers=world.headers["admin"]
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["resident"]["name"] == "Grandma Li"
    assert data["unit"] == {"site": "s1", "building": "3", "unit": "301"}
    assert [d["device"] for d in data["devices"]] == ["watch-301"]
    [daughter] = data["family"]
    assert daughter["email"] == "li@example.org" and "password_hash" not in daughter
    assert [i["id"] for i in data["incidents"]] == [world.ids["li_incident"]]
    assert [a["evidence"] for a in data["alert_events"]] == [{"heart_rate_bpm": LI_EVIDENCE}]
    assert [d["incident_id"] for d in data["deliveries"]] == [world.ids["li_incident"]]
    text = json.dumps(data)
    assert not [p for p in WANG_PERSONAL if p in text], "another resident's data in the export"
    assert world.ids["wang_incident"] not in text
    audit = (await world.client.get("/api/v1/audit", headers=world.headers["admin"])).json()
    assert any(a["action"] == "resident.exported" for a in audit)


async def test_erasure_leaves_nothing_personal_and_keeps_the_safety_record(world: World) -> None:
    admin = world.headers["admin"]
    before = every_cell(world.database_url)
    assert found(before, LI_PERSONAL), "the control: her data is there before"
    response = await world.client.post(f"/api/v1/residents/{world.ids['li']}/erase", headers=admin)
    assert response.status_code == 200, response.text
    erased = response.json()
    assert erased["incidents"] == 1 and erased["deliveries"] == 1
    assert erased["people_pseudonymised"] == 1 and erased["alert_events"] >= 1

    after = every_cell(world.database_url)
    assert found(after, LI_PERSONAL) == []
    assert found(after, {f"{LI_EVIDENCE}", "heart_rate_bpm"}) == []
    # Her flat is gone from the alert and incident records. Ids aside: they are random, and an
    # erased incident's key becomes its id, so a uuid can hold "301" by chance (CI saw one).
    records = [
        c
        for c in after
        if c[0] in ("alert_events", "incidents") and "id" not in c[1] and not UUID.fullmatch(c[2])
    ]
    assert [c for c in records if "301" in c[2]] == []
    # The safety record stays, anonymised: a vital-signs incident in building 3, no flat.
    li_incident = (
        await world.client.get(f"/api/v1/incidents/{world.ids['li_incident']}", headers=admin)
    ).json()
    assert li_incident["kind"] == "vital_signs" and li_incident["building"] == "3"
    assert li_incident["unit"] is None and li_incident["device"] is None
    # Everyone else's data is as it was.
    assert found(after, WANG_PERSONAL) and len(found(after, WANG_PERSONAL)) == len(
        found(before, WANG_PERSONAL)
    )
    wang = (
        await world.client.get(f"/api/v1/incidents/{world.ids['wang_incident']}", headers=admin)
    ).json()
    assert wang["unit"] == "401"
    residents = (await world.client.get("/api/v1/residents", headers=admin)).json()
    assert [r["name"] for r in residents] == ["Mr Wang"]
    # Her daughter can no longer log in; the erasure is audited; a second erasure is a 404.
    gone = await world.client.post(
        "/api/v1/auth/token", json={"username": "li-daughter", "password": "x" * 12}
    )
    assert gone.status_code == 401
    audit = (await world.client.get("/api/v1/audit", headers=admin)).json()
    [line] = [a for a in audit if a["action"] == "resident.erased"]
    assert line["actor"] == "admin" and line["detail"]["incidents"] == 1
    again = await world.client.post(f"/api/v1/residents/{world.ids['li']}/erase", headers=admin)
    assert again.status_code == 404


def test_the_cli_exports_and_erases_a_resident(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anmin.cli import app as cli

    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    store = Store(url)
    store.create_schema()
    resident = store.add_resident("Grandma Li", "s1", "3", "301")
    store.close()
    runner = CliRunner()
    out = tmp_path / "li.json"
    exported = runner.invoke(
        cli, ["hub", "export-resident", str(resident), "--out", str(out), "--db", url]
    )
    assert exported.exit_code == 0, exported.output
    assert json.loads(out.read_text(encoding="utf-8"))["resident"]["name"] == "Grandma Li"
    erased = runner.invoke(cli, ["hub", "erase-resident", str(resident), "--yes", "--db", url])
    assert erased.exit_code == 0 and f"erased resident {resident}" in erased.output
    again = runner.invoke(cli, ["hub", "export-resident", str(resident), "--db", url])
    assert again.exit_code == 1 and f"no resident {resident}" in again.output
    assert found(every_cell(url), {"Grandma Li"}) == []
