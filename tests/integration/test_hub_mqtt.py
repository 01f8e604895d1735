"""The hub against a real Mosquitto: alerts in, acks and broadcasts out, receipts back."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bus import Incoming, MqttLink
from bus.broker import Mosquitto, free_port
from bus.tasks import stop
from hub import HubSettings, Intake, create_app, serve
from tests.conftest import wait_for
from wire import Ack, AlertEvent, Broadcast, Codec, Phase, Receipt, Severity, topics, uuid7
from wire.topics import Channel

pytestmark = pytest.mark.integration

SITE, GATEWAY = "site-a", "gw-1"
codec = Codec()


def now() -> datetime:
    return datetime.now(UTC)


def gas_alarm(building: str = "5") -> AlertEvent:
    return AlertEvent(
        id=uuid7(),
        key=f"gas_high:{SITE}/{GATEWAY}/kitchen-1",
        phase=Phase.RAISED,
        severity=Severity.EXTREME,
        kind="gas",
        rule="gas_high",
        site=SITE,
        gateway=GATEWAY,
        device="kitchen-1",
        building=building,
        ts=now(),
        evidence={"gas_lel": 55.0},
        message="LEL 55%",
    )


class Gateway:
    """A stand-in edge: publishes on its gateway topics, records acks and broadcasts."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.acks: list[Ack] = []
        self.broadcasts: list[Broadcast] = []
        self.link = MqttLink(
            mosquitto.broker,
            client_id="test-gateway",
            subscriptions=[
                (topics.gateway_topic(Channel.ACK, SITE, GATEWAY), 1),
                (topics.broadcast(SITE), 1),
            ],
            handler=self._received,
        )

    async def _received(self, message: Incoming) -> None:
        if topics.parse(message.topic).channel is Channel.ACK:
            self.acks.append(codec.decode(message.payload, Ack, now()))
        else:
            self.broadcasts.append(codec.decode(message.payload, Broadcast, now()))

    async def publish(self, channel: Channel, payload: bytes) -> None:
        await self.link.publish(topics.gateway_topic(channel, SITE, GATEWAY), payload, qos=1)

    def acked(self, event_id: str) -> int:
        return sum(ack.ids.count(event_id) for ack in self.acks)


@pytest.fixture
async def hub(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = HubSettings(
        broker=mosquitto.broker,
        database_url=f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        client_id="test-hub",
        auth_required=False,  # these tests are about MQTT; tests/integration/hub test auth
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert await app.state.link.wait_connected(timeout=10)
        yield app


@pytest.fixture
async def gateway(mosquitto: Mosquitto) -> AsyncIterator[Gateway]:
    gateway = Gateway(mosquitto)
    task = asyncio.create_task(gateway.link.run())
    try:
        assert await gateway.link.wait_connected(timeout=10)
        yield gateway
    finally:
        await stop(task)


@pytest.fixture
async def http(hub: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=hub)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        yield client


@pytest.mark.anyio
async def test_alert_ack_broadcast_receipt_round_trip(
    hub: FastAPI, gateway: Gateway, http: httpx.AsyncClient
) -> None:
    intake: Intake = hub.state.intake
    health = (await http.get("/health")).json()
    assert health == {"status": "ok", "mqtt": "connected", "db": "ok"}

    event = gas_alarm()
    await gateway.publish(Channel.ALERT, codec.encode(event))
    await wait_for(lambda: gateway.acked(event.id) == 1, what="the ack of the alert")
    alerts = (await http.get("/api/alerts")).json()
    assert [a["id"] for a in alerts] == [event.id]
    assert alerts[0]["building"] == "5" and alerts[0]["evidence"] == {"gas_lel": 55.0}

    await wait_for(lambda: len(gateway.broadcasts) == 1, what="the gas broadcast")
    [broadcast] = gateway.broadcasts
    assert broadcast.cause == event.id and broadcast.buildings == ["5"]
    assert "5号楼" in broadcast.text

    # The edge missed the ack and sends again: acked again, stored and broadcast once.
    await gateway.publish(Channel.ALERT, codec.encode(event))
    await wait_for(lambda: gateway.acked(event.id) == 2, what="the second ack")
    assert len((await http.get("/api/alerts")).json()) == 1
    listed = (await http.get("/api/broadcasts")).json()
    assert [b["id"] for b in listed] == [broadcast.id]
    assert listed[0]["published_at"] is not None
    assert intake.counters["broadcasts_published"] == 1
    assert len(gateway.broadcasts) == 1

    # Junk on the alert topic is counted, not stored, and the hub carries on.
    await gateway.publish(Channel.ALERT, b"{this is not json")
    await wait_for(lambda: intake.counters["malformed_json"] == 1, what="the junk counted")
    later = gas_alarm(building="6")
    await gateway.publish(Channel.ALERT, codec.encode(later))
    await wait_for(lambda: gateway.acked(later.id) == 1, what="the ack after the junk")
    assert {a["id"] for a in (await http.get("/api/alerts")).json()} == {event.id, later.id}

    # A speaker played the first broadcast; its receipt shows under the broadcast.
    receipt = Receipt(
        broadcast_id=broadcast.id,
        speaker="spk-5-1",
        outcome="played",
        ts=now(),
        content_hash=hashlib.sha256(broadcast.text.encode()).hexdigest(),
        site=SITE,
        gateway=GATEWAY,
        building="5",
    )
    for _ in range(2):  # at-least-once: a re-delivered receipt is stored once
        await gateway.publish(Channel.RECEIPT, codec.encode(receipt))

    async def receipt_listed() -> bool:
        response = await http.get(f"/api/broadcasts/{broadcast.id}")
        return [r["speaker"] for r in response.json()["receipts"]] == ["spk-5-1"]

    await wait_for(receipt_listed, what="the receipt under its broadcast")
    await wait_for(
        lambda: intake.counters["receipts_stored"] + intake.counters["receipts_repeated"] == 2,
        what="both receipts handled",
    )
    assert intake.counters["receipts_stored"] == 1
    assert (
        await http.get("/api/broadcasts/0190b4e0-0000-7000-8000-000000000000")
    ).status_code == 404


@pytest.mark.anyio
async def test_pending_broadcast_is_published_when_the_hub_starts(
    mosquitto: Mosquitto, gateway: Gateway, tmp_path: Path
) -> None:
    """The hub committed an alarm's broadcast and crashed before publishing it."""
    from hub.store import Store

    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    store = Store(url)
    store.create_schema()
    _, broadcast = store.record_alert(gas_alarm(), now())
    store.close()
    assert broadcast is not None

    app = create_app(HubSettings(broker=mosquitto.broker, database_url=url, auth_required=False))
    async with app.router.lifespan_context(app):
        await wait_for(lambda: len(gateway.broadcasts) == 1, what="the pending broadcast")
        assert gateway.broadcasts[0].id == broadcast.id
        await wait_for(
            lambda: app.state.store.unpublished_broadcasts() == [], what="it marked published"
        )


@pytest.mark.anyio
async def test_hub_reconnects_after_the_broker_restarts(
    hub: FastAPI, mosquitto: Mosquitto, gateway: Gateway, http: httpx.AsyncClient
) -> None:
    await asyncio.to_thread(mosquitto.restart)
    await wait_for(
        lambda: hub.state.link.connections >= 2 and gateway.link.connections >= 2,
        timeout=20,
        what="both links back",
    )
    assert (await http.get("/health")).json()["mqtt"] == "connected"
    event = gas_alarm()
    await gateway.publish(Channel.ALERT, codec.encode(event))
    await wait_for(lambda: gateway.acked(event.id) == 1, what="an ack after the restart")


@pytest.mark.anyio
async def test_serve_answers_http_and_stops_on_cancel(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    settings = HubSettings(
        broker=mosquitto.broker,
        database_url=f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        http_port=port,
    )
    task = asyncio.create_task(serve(settings))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

        async def healthy() -> bool:
            try:
                response = await client.get("/health")
            except httpx.TransportError:
                return False
            return bool(response.json().get("mqtt") == "connected")

        await wait_for(healthy, what="the hub's HTTP server")
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done and task.cancelled()


@pytest.mark.anyio
async def test_serve_on_a_taken_port_raises_hub_error(mosquitto: Mosquitto, tmp_path: Path) -> None:
    import socket

    from hub import ServeError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = HubSettings(
            broker=mosquitto.broker,
            database_url=f"sqlite:///{tmp_path / 'hub.sqlite3'}",
            http_port=taken.getsockname()[1],
        )
        with pytest.raises(ServeError):
            await asyncio.wait_for(serve(settings), timeout=20)
