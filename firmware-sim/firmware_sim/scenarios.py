"""Ready-made buildings for the demo and the tests."""

from __future__ import annotations

from datetime import timedelta

import bus
from firmware_sim.building import Clock, SimulatedBuilding, utc_now
from firmware_sim.gas import GasSensor
from firmware_sim.speaker import Speaker


def gas_leak_building(
    broker: bus.Broker,
    *,
    site: str = "demo",
    gateway: str = "gw-1",
    building: str = "b1",
    seed: int = 7,
    leak_after_s: float = 15.0,
    clock: Clock = utc_now,
) -> SimulatedBuilding:
    """The walking skeleton's building: a kitchen gas sensor in unit 101 and a speaker.

    The sensor ("gas-b1-101" for building b1) starts leaking ``leak_after_s`` after this is
    called (by ``clock``), rising 2 %LEL/s to 40 %LEL and holding until its valve is closed.
    """
    gas = GasSensor(f"gas-{building}-101", seed)
    gas.leak(clock() + timedelta(seconds=leak_after_s), rise_per_s=2.0, peak_lel=40.0)
    speaker = Speaker(f"spk-{building}", building)
    return SimulatedBuilding(
        broker,
        site=site,
        gateway=gateway,
        building=building,
        gas_devices=[gas],
        speakers=[speaker],
        clock=clock,
    )
