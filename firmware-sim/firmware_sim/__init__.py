"""Simulated devices: pure models (gas sensor, speaker) and an MQTT runner for a building.

Imports only ``wire``, ``bus`` and the standard library.
"""

from firmware_sim.building import SimulatedBuilding, utc_now
from firmware_sim.gas import GasSensor, Leak
from firmware_sim.scenarios import gas_leak_building
from firmware_sim.speaker import Speaker, content_hash

__all__ = [
    "GasSensor",
    "Leak",
    "SimulatedBuilding",
    "Speaker",
    "content_hash",
    "gas_leak_building",
    "utc_now",
]
