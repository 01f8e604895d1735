"""A simulated building against a real Mosquitto: readings, retained status, commands, receipts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

import bus
import wire
from bus.broker import Mosquitto
from firmware_sim.building import SimulatedBuilding, utc_now
from firmware_sim.gas import GasSensor
from firmware_sim.speaker import Speaker, content_hash
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SITE, GATEWAY, BUILDING = "demo", "gw-1", "b1"
GAS, SPEAKER = "gas-b1-101", "spk-b1"


class Observer:
    """Everything the gateway would see of its devices, decoded by topic."""

    def __init__(self, broker: bus.Broker) -> None:
        self.codec = wire.Codec()
        self.readings: list[wire.Reading] = []
        self.statuses: list[tuple[wire.DeviceStatus, bool]] = []  # (status, retained)
        self.receipts: list[wire.Receipt] = []
        self.link = bus.MqttLink(
            broker,
            client_id="test-observer",
            subscriptions=[(wire.topics.gateway_devices_filter(SITE, GATEWAY), 1)],
            handler=self._on_message,
        )

    async def _on_message(self, incoming: bus.Incoming) -> None:
        topic = wire.topics.parse(incoming.topic)
        now = utc_now()
        match topic.channel:
            case wire.topics.Channel.READING:
                self.readings += self.codec.decode_readings(incoming.payload, now)
            case wire.topics.Channel.STATUS:
                status = self.codec.decode(incoming.payload, wire.DeviceStatus, now)
                self.statuses.append((status, incoming.retain))
            case wire.topics.Channel.DEVICE_RECEIPT:
                self.receipts.append(self.codec.decode(incoming.payload, wire.Receipt, now))
            case _:
                pass

    async def send(self, command: wire.Command) -> None:
        topic = wire.topics.command(SITE, GATEWAY, command.device)
        await self.link.publish(topic, self.codec.encode(command), qos=1)


@contextlib.asynccontextmanager
async def running(*tasks: asyncio.Task[None]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def readings_of(observer: Observer, device: str) -> int:
    return sum(1 for r in observer.readings if r.device == device)


async def test_simulated_building_over_mqtt(mosquitto: Mosquitto) -> None:
    gas = GasSensor(GAS, seed=7, interval_s=0.05)
    speaker = Speaker(SPEAKER, BUILDING)
    sim = SimulatedBuilding(
        mosquitto.broker,
        site=SITE,
        gateway=GATEWAY,
        building=BUILDING,
        gas_devices=[gas],
        speakers=[speaker],
    )
    observer = Observer(mosquitto.broker)
    tasks_before = asyncio.all_tasks()
    sim_task = asyncio.create_task(sim.run())
    # Subscribe only after the sim announced itself, so its status must come back retained.
    await wait_for(lambda: sim.counters["readings_published"] > 0, 10, "the sim to publish")
    observer_task = asyncio.create_task(observer.link.run())
    async with running(sim_task, observer_task):
        assert await observer.link.wait_connected(10)

        await wait_for(lambda: readings_of(observer, GAS) >= 5, 10, "gas readings")
        seqs = [r.seq for r in observer.readings]
        assert seqs == sorted(seqs)
        await wait_for(
            lambda: (
                {(s.device, s.state, retained) for s, retained in observer.statuses}
                >= {(GAS, "online", True), (SPEAKER, "online", True)}
            ),
            10,
            "the retained online statuses",
        )

        await observer.send(
            wire.Command(id=wire.uuid7(), device=GAS, action="siren_on", ts=utc_now())
        )
        await wait_for(
            lambda: any(
                s.device == GAS and s.actuators.get("siren") == "on" for s, _ in observer.statuses
            ),
            10,
            "the siren to show in the gas sensor's status",
        )
        assert gas.siren

        broadcast = wire.Broadcast(
            id=wire.uuid7(),
            site=SITE,
            ts=utc_now(),
            severity=wire.Severity.SEVERE,
            headline="燃气泄漏",
            text="1号楼101室燃气泄漏，请勿使用明火，立即撤离。",
        )
        await observer.send(
            wire.Command(
                id=wire.uuid7(), device=SPEAKER, action="play", ts=utc_now(), broadcast=broadcast
            )
        )
        await wait_for(lambda: len(observer.receipts) == 1, 10, "the speaker's receipt")
        receipt = observer.receipts[0]
        assert (receipt.broadcast_id, receipt.speaker, receipt.outcome) == (
            broadcast.id,
            SPEAKER,
            "played",
        )
        assert receipt.content_hash == content_hash(broadcast)

        # Junk on a command topic is counted and ignored; the readings go on.
        before = readings_of(observer, GAS)
        await observer.link.publish(wire.topics.command(SITE, GATEWAY, GAS), b"{not json", qos=1)
        await wait_for(lambda: sim.counters["commands_rejected"] == 1, 10, "the junk counted")
        assert sim.counters["commands_rejected.malformed_json"] == 1
        await wait_for(lambda: readings_of(observer, GAS) >= before + 5, 10, "readings after junk")
        assert not sim_task.done()
        assert sim.counters["handler_errors"] == 0

    assert sim_task.cancelled()
    assert observer_task.cancelled()
    # Nothing of the sim's (or aiomqtt's) is left running.
    assert asyncio.all_tasks() == tasks_before
