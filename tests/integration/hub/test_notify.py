"""Routing, delivery and escalation against a real SMTP server and a real webhook receiver,
on SQLite and PostgreSQL, with the test driving the hub's clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bus.broker import Mosquitto
from hub.notify import Notifier
from hub.settings import HubSettings
from hub.timers import Timers
from tests.conftest import wait_for
from tests.integration.hub.receivers import SmtpSink, WebhookReceiver
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
from wire import Severity

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

POLICY = """\
version: 1
timezone: UTC
quiet_hours: {{start: "22:00", end: "07:00"}}
delivery: {{retries: 2, retry_after_s: 30}}
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, sender: hub@anmin.test}}
  ops: {{type: webhook, url: "{webhook_url}"}}
routes:
  - name: life safety
    kinds: [gas, fall]
    tiers:
      - {{after_minutes: 0, roles: [family, committee], channels: [email], fallback: ops}}
      - {{after_minutes: 5, roles: [staff], channels: [email, ops]}}
  - name: routine
    tiers:
      - {{roles: [committee], channels: [email]}}
"""


@dataclass
class Setup:
    settings: HubSettings
    clock: FakeClock
    smtp: SmtpSink
    webhook: WebhookReceiver


@pytest.fixture
def setup(
    mosquitto: Mosquitto,
    hub_database: str,
    clock: FakeClock,
    smtp: SmtpSink,
    webhook: WebhookReceiver,
    tmp_path: Path,
) -> Setup:
    policy = tmp_path / "routing.yaml"
    policy.write_text(POLICY.format(smtp_port=smtp.port, webhook_url=webhook.url))
    settings = settings_for(mosquitto, hub_database, routing_policy=policy)
    return Setup(settings, clock, smtp, webhook)


@pytest.fixture
async def hub(setup: Setup) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = app_for(setup.settings, setup.clock)
    async with running(app) as client:
        store = store_of(app)
        add_person(store, "installer", "installer")
        add_person(store, "committee", "committee", email="committee@anmin.test")
        add_person(store, "staff", "staff", email="staff@anmin.test")
        daughter = add_person(store, "li-daughter", "family", email="li@family.test")
        add_person(store, "wang-son", "family", email="wang@family.test")
        store.link_family(daughter, store.add_resident("Grandma Li", "s1", "3", "301"))
        yield app, client


def timers(app: FastAPI) -> Timers:
    t: Timers = app.state.timers
    return t


def notifier(app: FastAPI) -> Notifier:
    n = timers(app).notifier
    assert n is not None
    return n


async def post(client: httpx.AsyncClient, **kwargs: Any) -> str:
    headers = await login(client, "installer")
    response = await client.post(
        "/api/v1/events", content=codec.encode(event(**kwargs)), headers=headers
    )
    assert response.status_code == 200, response.text
    incident: str = response.json()["results"][0]["incident_id"]
    return incident


async def settled(app: FastAPI, incident: str) -> list[tuple[str, str, str]]:
    """Tick until no delivery of the incident is in flight; (notice, channel, status) each."""

    async def done() -> bool:
        await timers(app).tick()
        now = app.state.clock()
        # No escalation due (another tick may hold the row: SKIP LOCKED passes it over)...
        record = await asyncio.to_thread(store_of(app).incident, incident)
        assert record is not None
        due = record.next_escalation_at
        if record.state == "open" and due is not None and due <= now:
            return False
        # ...and no delivery in flight or due.
        rows = await asyncio.to_thread(notifier(app).deliveries, incident)
        return all(
            d.status in ("sent", "failed") or (d.status != "sending" and d.next_attempt_at > now)
            for d in rows
        )

    await wait_for(done, what="deliveries to settle")
    rows = await asyncio.to_thread(notifier(app).deliveries, incident)
    return sorted((d.notice, d.channel, d.status) for d in rows)


async def test_escalation_tells_each_tier_once_until_acknowledged(
    hub: tuple[FastAPI, httpx.AsyncClient], setup: Setup
) -> None:
    app, client = hub
    clock, smtp, webhook = setup.clock, setup.smtp, setup.webhook
    incident = await post(client, at=clock.now, kind="fall", building="3", unit="301")
    assert await settled(app, incident) == [
        ("tier:0", "email", "sent"),  # the committee
        ("tier:0", "email", "sent"),  # Grandma Li's daughter; not the Wang family
    ]
    assert {m["To"] for m in smtp.messages} == {"committee@anmin.test", "li@family.test"}
    assert "fall" in smtp.messages[0]["Subject"]
    # Four minutes on, nothing more; at five, the staff tier by e-mail and webhook.
    clock.advance(minutes=4)
    await settled(app, incident)
    assert smtp.count() == 2
    clock.advance(minutes=1)
    await settled(app, incident)
    await wait_for(lambda: smtp.count() == 3 and webhook.count() == 1, what="the staff tier")
    assert smtp.to("staff@anmin.test") and webhook.bodies[0]["person"]["username"] == "staff"
    assert webhook.bodies[0]["incident"]["id"] == incident
    # No tier after that; more ticks send nothing again.
    clock.advance(minutes=30)
    await settled(app, incident)
    assert (smtp.count(), webhook.count()) == (3, 1)
    audit = [a.action for a in store_of(app).audit(subject_id=incident)]
    assert audit == ["incident.opened", "incident.notified", "incident.escalated"]

    # Acknowledged within five minutes: the staff are never told.
    second = await post(client, at=clock.now, kind="gas", building="4", unit="401")
    await settled(app, second)
    assert smtp.count() == 4  # the committee only: nobody's relative lives in 401
    headers = await login(client, "committee")
    ack = await client.post(f"/api/v1/incidents/{second}/acknowledge", headers=headers)
    assert ack.status_code == 200
    clock.advance(minutes=10)
    await settled(app, second)
    assert (smtp.count(), webhook.count()) == (4, 1)


async def test_failures_are_retried_then_fall_back(
    hub: tuple[FastAPI, httpx.AsyncClient], setup: Setup
) -> None:
    app, client = hub
    clock, smtp, webhook = setup.clock, setup.smtp, setup.webhook
    # The committee member has no e-mail address: e-mail fails, the fallback webhook works.
    add_person(store_of(app), "no-mail", "committee")
    incident = await post(client, at=clock.now, kind="gas", building="9", unit="901")
    rows = await settled(app, incident)
    assert ("tier:0", "email", "retrying") in rows
    for _ in range(2):  # two retries, 30 s then 60 s later
        clock.advance(seconds=61)
        rows = await settled(app, incident)
    assert ("tier:0", "email", "failed") in rows
    clock.advance(seconds=1)
    rows = await settled(app, incident)
    assert ("tier:0>fallback", "ops", "sent") in rows
    await wait_for(lambda: webhook.count() == 1, what="the fallback webhook")
    assert webhook.bodies[0]["person"]["username"] == "no-mail"
    failed = [d for d in notifier(app).deliveries(incident) if d.status == "failed"]
    assert failed[0].attempts == 3 and "no e-mail" in (failed[0].last_error or "")

    # A webhook that fails once is retried and then delivers, once.
    webhook.fail_next = 1
    clock.advance(minutes=5)
    rows = await settled(app, incident)
    assert ("tier:1", "ops", "retrying") in rows
    clock.advance(seconds=31)
    rows = await settled(app, incident)
    assert ("tier:1", "ops", "sent") in rows
    assert [b["notice"] for b in webhook.bodies] == ["tier:0>fallback", "tier:1"]
    assert smtp.to("staff@anmin.test")


async def test_quiet_hours_hold_routine_notices_not_life_safety(
    hub: tuple[FastAPI, httpx.AsyncClient], setup: Setup
) -> None:
    app, client = hub
    clock, smtp = setup.clock, setup.smtp
    clock.now = clock.now.replace(hour=23)
    routine = await post(
        client, at=clock.now, kind="door", severity=Severity.MODERATE, building="5", unit="501"
    )
    gas = await post(client, at=clock.now, kind="gas", building="5", unit="502")
    assert await settled(app, gas) == [("tier:0", "email", "sent")]
    assert await settled(app, routine) == [("tier:0", "email", "queued")]  # held till 07:00
    clock.now = clock.now.replace(hour=7) + timedelta(days=1)
    assert await settled(app, routine) == [("tier:0", "email", "sent")]
    assert len(smtp.to("committee@anmin.test")) == 2  # (and the gas leak went on to the staff)


async def test_escalation_survives_a_restart_and_fires_once_with_two_hubs(setup: Setup) -> None:
    clock, smtp, webhook = setup.clock, setup.smtp, setup.webhook
    first = app_for(setup.settings, clock)
    async with running(first) as client:
        store = store_of(first)
        add_person(store, "installer", "installer")
        add_person(store, "committee", "committee", email="committee@anmin.test")
        add_person(store, "staff", "staff", email="staff@anmin.test")
        incident = await post(client, at=clock.now, kind="gas", building="3", unit="301")
        await settled(first, incident)
    assert smtp.count() == 1
    # The hub is down while the five minutes pass; two hubs come up on the same database.
    clock.advance(minutes=6)
    one, two = app_for(setup.settings, clock), app_for(setup.settings, clock)
    async with running(one), running(two):

        async def tier_one_sent() -> bool:
            # Both hubs keep ticking while we wait: a send the first ticks only queued (or
            # retried) goes out on a later tick, as it would with the timers' own loop.
            await asyncio.gather(timers(one).tick(), timers(two).tick())
            return smtp.count() >= 2 and webhook.count() >= 1

        await wait_for(tier_one_sent, timeout=30, interval=0.1, what="tier 1")
        for _ in range(3):
            await asyncio.gather(timers(one).tick(), timers(two).tick())
        rows = notifier(one).deliveries(incident)
    assert sorted((d.notice, d.channel, d.status) for d in rows) == [
        ("tier:0", "email", "sent"),
        ("tier:1", "email", "sent"),
        ("tier:1", "ops", "sent"),
    ]
    assert (smtp.count(), webhook.count()) == (2, 1)


async def test_an_apprise_channel_delivers_through_apprise(webhook: WebhookReceiver) -> None:
    """Apprise's json:// notifier, pointed at the local receiver, with a per-person URL."""
    from hub.channels import AppriseChannel, ChannelError, Notice
    from hub.directory import PersonRecord
    from hub.routing import ChannelConfig

    url = webhook.url.replace("http://", "json://") + "?user={username}"
    channel = AppriseChannel(ChannelConfig(name="chat", type="apprise", url=url))
    person = PersonRecord(1, "li-daughter", "Li Na", "family", None, "+8613800000000", True)
    notice = Notice(1, "incident-1", "tier:0", "[Anmin] Severe fall at s1/3/301", "Fall", {})
    await channel.send(notice, person)
    await wait_for(lambda: webhook.count() == 1, what="apprise's POST")
    assert webhook.bodies[0]["title"] == "[Anmin] Severe fall at s1/3/301"
    assert webhook.bodies[0]["message"] == "Fall"
    broken = AppriseChannel(ChannelConfig(name="x", type="apprise", url="nonsense://{nope}"))
    with pytest.raises(ChannelError):
        await broken.send(notice, person)
