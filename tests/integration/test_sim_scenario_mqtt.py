"""A scenario over a real Mosquitto: readings, retained statuses, last wills, commands and
speaker receipts, faster than real time."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest

import bus
import wire
from bus.broker import Mosquitto
from firmware_sim import community
from firmware_sim.runner import ScenarioRunner, run_start, utc_now
from firmware_sim.scenario import Scenario, load_yaml
from tests.conftest import wait_for
from tests.unit.sim.helpers import SMALL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Observer:
    def __init__(self, broker: bus.Broker) -> None:
        self.codec = wire.Codec()
        self.readings: Counter[str] = Counter()
        self.junk = 0
        self.statuses: dict[str, tuple[wire.DeviceStatus, bool]] = {}
        self.receipts: list[wire.Receipt] = []
        self.link = bus.MqttLink(
            broker,
            client_id="test-scenario-observer",
            subscriptions=[(wire.topics.gateway_devices_filter("s", "gw-b1"), 1)],
            handler=self.on_message,
        )

    async def on_message(self, incoming: bus.Incoming) -> None:
        topic = wire.topics.parse(incoming.topic)
        now = utc_now()
        if topic.channel is wire.topics.Channel.READING:
            try:
                for r in self.codec.decode_readings(incoming.payload, now):
                    self.readings[r.device] += 1
            except wire.WireError:
                self.junk += 1
        elif topic.channel is wire.topics.Channel.STATUS:
            status = self.codec.decode(incoming.payload, wire.DeviceStatus, now)
            self.statuses[status.device] = (status, incoming.retain)
        elif topic.channel is wire.topics.Channel.DEVICE_RECEIPT:
            self.receipts.append(self.codec.decode(incoming.payload, wire.Receipt, now))


async def test_a_scenario_over_mqtt(mosquitto: Mosquitto) -> None:
    text = SMALL + (
        "incidents:\n  - {kind: gas_leak, at: 1m, unit: b1/101, speed: fast}\n"
        "faults:\n  - {fault: malformed, device: pump-b1, rate: 0.5}\n"
    )
    scenario = load_yaml(text, Scenario, "<small>")
    # 10 simulated minutes at 600x: one second of wall time.
    c = community.build(scenario, start=run_start(utc_now(), 600, 600), duration_s=600)
    runner = ScenarioRunner(c, mosquitto.broker, speed=600, connections="device")
    observer = Observer(mosquitto.broker)
    observer_task = asyncio.create_task(observer.link.run())
    assert await observer.link.wait_connected(10)
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(lambda: observer.readings["gas-b1-101"] > 20, 20, "gas readings")
        await wait_for(
            lambda: (
                observer.statuses.get("spk-b1", (None, False))[0] is not None
                or "speaker-b1" in observer.statuses
            ),
            10,
            "the speaker's status",
        )
        gas = wire.Command(id=wire.uuid7(), device="gas-b1-101", action="valve_close", ts=utc_now())
        topic = wire.topics.command("s", "gw-b1", "gas-b1-101")
        await observer.link.publish(topic, observer.codec.encode(gas), qos=1)
        await wait_for(
            lambda: observer.statuses["gas-b1-101"][0].actuators.get("valve") == "closed",
            10,
            "the valve to close",
        )
        broadcast = wire.Broadcast(
            id=wire.uuid7(),
            site="s",
            ts=utc_now(),
            severity=wire.Severity.SEVERE,
            headline="燃气泄漏",
            text="1号楼燃气泄漏，请立即撤离。",
        )
        play = wire.Command(
            id=wire.uuid7(), device="speaker-b1", action="play", ts=utc_now(), broadcast=broadcast
        )
        await observer.link.publish(
            wire.topics.command("s", "gw-b1", "speaker-b1"), observer.codec.encode(play), qos=1
        )
        await wait_for(lambda: len(observer.receipts) == 1, 10, "the receipt")
        assert observer.receipts[0].outcome == "played"
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The run ended: every device is marked offline (retained), nothing was lost.
    await wait_for(
        lambda: all(
            observer.statuses.get(d, (None, False))[0] is not None
            and observer.statuses[d][0].state == "offline"
            for d in runner.devices
        ),
        10,
        "every device offline",
    )
    assert runner.counters["readings_lost"] == 0
    assert runner.counters["readings_published"] == sum(observer.readings.values()) + observer.junk
    assert observer.junk > 10
    assert len(observer.readings) == len(c.devices)
    observer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await observer_task


async def test_each_device_has_its_own_last_will(mosquitto: Mosquitto) -> None:
    scenario = load_yaml(SMALL, Scenario, "<small>")
    c = community.build(scenario, start=utc_now(), duration_s=3600)
    runner = ScenarioRunner(c, mosquitto.broker, speed=1, connections="device")
    links = runner._links
    assert len(links) == len(runner.devices)
    wills = [link.will() if callable(link.will) else link.will for link in links]
    devices = set()
    for will in wills:
        assert will is not None and will.retain
        status = wire.Codec().decode(will.payload, wire.DeviceStatus, utc_now())
        assert status.state == "offline"
        devices.add(status.device)
    assert devices == set(runner.devices)
