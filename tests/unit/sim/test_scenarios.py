"""The ready-made gas-leak building (built, not run: no broker is needed)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import bus
import wire
from firmware_sim.gas import GasSensor
from firmware_sim.scenarios import gas_leak_building
from firmware_sim.speaker import Speaker

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def test_gas_leak_building_has_the_kitchen_sensor_and_a_speaker() -> None:
    sim = gas_leak_building(bus.Broker("127.0.0.1", 1), clock=lambda: T0, leak_after_s=15.0)
    assert set(sim.devices) == {"gas-b1-101", "spk-b1"}
    for device_id in sim.devices:
        assert re.fullmatch(wire.topics.ID_PATTERN, device_id)
    assert sim.link.client_id == "sim-demo-gw-1-b1"
    (gas,) = sim.gas_devices
    assert isinstance(gas, GasSensor)
    assert isinstance(sim.speakers[0], Speaker)
    assert sim.speakers[0].building == "b1"
    # The leak starts 15 s in and rises 2 %LEL/s: 25 %LEL about 12 s later, 40 at the top.
    assert not gas.truth(T0 + timedelta(seconds=15))
    assert gas.concentration(T0 + timedelta(seconds=15 + 12.25)) == 25.0
    assert gas.concentration(T0 + timedelta(minutes=5)) == 40.0


def test_the_will_marks_the_first_device_offline() -> None:
    sim = gas_leak_building(bus.Broker("127.0.0.1", 1), clock=lambda: T0)
    will = sim.link.will
    assert isinstance(will, bus.LastWill)
    assert (will.retain, will.qos) == (True, 1)
    assert will.topic == wire.topics.status("demo", "gw-1", "gas-b1-101")
    status = wire.Codec().decode(will.payload, wire.DeviceStatus, T0)
    assert (status.device, status.state) == ("gas-b1-101", "offline")
