"""A device nobody listed announces itself; the gateway watches it at once and after a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from bus.broker import Mosquitto
from tests.conftest import wait_for
from tests.integration.edge_support import (
    GATEWAY,
    SITE,
    Recorder,
    gas_reading,
    make_agent,
    running,
)
from wire import Ack, AlertEvent, Codec, DeadLetter, DeviceStatus, topics
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NEW = "gas-b1-301"  # installed after the config was written
DISCOVERY = "discovery: {kinds: [gas, co, smoke, heat]}"


def announcement(device: str, kind: str, unit: str | None = None) -> bytes:
    status = DeviceStatus(
        device=device, state="online", ts=datetime.now(UTC), kind=kind, unit=unit, interval_s=5
    )
    return msgspec.json.encode(status)


async def test_an_announced_gas_sensor_raises_its_alarm_and_is_kept_across_a_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    data = tmp_path / "edge"
    agent = make_agent(mosquitto.broker, data, extra=DISCOVERY)
    gateway = topics.gateway_topic
    recorder = Recorder(
        mosquitto.broker,
        gateway(Channel.ALERT, SITE, GATEWAY),
        gateway(Channel.DEADLETTER, SITE, GATEWAY),
        topics.command(SITE, GATEWAY, NEW),
    )
    codec = Codec()
    async with running(agent.run(), recorder.link.run()):
        assert await agent.local.wait_connected(10) and await recorder.link.wait_connected(10)
        # A wearable may not join this way: its announcement is a dead letter, its readings
        # are not taken.
        band = "band-b1-301"
        await agent.local.publish(
            topics.status(SITE, GATEWAY, band), announcement(band, "wearable")
        )
        await agent.local.publish(
            topics.status(SITE, GATEWAY, NEW), announcement(NEW, "gas", "301"), retain=True
        )
        await wait_for(lambda: NEW in agent.devices, what="the gas sensor to be taken in")
        for seq in range(1, 4):
            await agent.local.publish(
                topics.reading(SITE, GATEWAY, NEW), gas_reading(seq, 60.0, NEW)
            )

        def raised() -> list[AlertEvent]:
            alerts = recorder.on(gateway(Channel.ALERT, SITE, GATEWAY))
            return [codec.decode(m.payload, AlertEvent, datetime.now(UTC)) for m in alerts]

        await wait_for(lambda: any(a.device == NEW for a in raised()), what="the new one's alarm")
        await wait_for(
            lambda: bool(recorder.on(topics.command(SITE, GATEWAY, NEW))), what="its siren command"
        )
        letters = [
            codec.decode(m.payload, DeadLetter, datetime.now(UTC))
            for m in recorder.on(gateway(Channel.DEADLETTER, SITE, GATEWAY))
        ]
    [alert] = [a for a in raised() if a.device == NEW and a.phase == "raised"][:1]
    assert alert.unit == "301" and alert.kind == "gas"
    assert [(letter.reason, band in letter.detail) for letter in letters] == [
        ("unknown_device", True)
    ]
    assert agent.ingest.counters["devices_discovered"] == 1
    agent.close()

    # A restart knows it before any message (a broker restarted without its store would
    # have lost its retained announcement): where it is, that it reports every 5 s, and that
    # its alarm stands.
    again = make_agent(mosquitto.broker, data, extra=DISCOVERY)
    assert again.devices[NEW].unit == "301" and again.devices[NEW].interval_s == 5
    assert any(t.severity for t in again.engine.state.alerts["gas-lel"].values())
    watcher = Recorder(
        mosquitto.broker, gateway(Channel.ALERT, SITE, GATEWAY), client_id="test-watcher"
    )
    async with running(again.run(), watcher.link.run()):
        assert await again.local.wait_connected(10) and await watcher.link.wait_connected(10)
        # The installer takes the sensor away and clears its retained announcement.
        await again.local.publish(topics.status(SITE, GATEWAY, NEW), b"", retain=True)
        await wait_for(lambda: NEW not in again.devices, what="the sensor to be forgotten")

        def cleared() -> list[AlertEvent]:
            events = [
                codec.decode(m.payload, AlertEvent, datetime.now(UTC)) for m in watcher.messages
            ]
            return [e for e in events if e.device == NEW and e.phase == "cleared"]

        async def acked_until_cleared() -> bool:
            # The hub's part: each event is acknowledged, so the clear follows its raise.
            ids = [
                codec.decode(m.payload, AlertEvent, datetime.now(UTC)).id for m in watcher.messages
            ]
            if ids:
                ack = codec.encode(Ack(ids=ids, ts=datetime.now(UTC)))
                await watcher.link.publish(gateway(Channel.ACK, SITE, GATEWAY), ack)
            return bool(cleared())

        await wait_for(acked_until_cleared, what="its alarm to clear at the hub")
        await again.local.publish(topics.reading(SITE, GATEWAY, NEW), gas_reading(9, 60.0, NEW))
        await wait_for(
            lambda: again.ingest.counters["rejected.unknown_device"] == 1, what="a stranger again"
        )
    assert cleared()[0].message.endswith("device removed or moved")
    assert again.ingest.counters["devices_forgotten"] == 1
    again.close()
    assert NEW not in make_agent(mosquitto.broker, data, extra=DISCOVERY).devices
