"""Load: a synthetic community of any size, reporting at a chosen aggregate rate.

``load_scenario(devices=10_000, rate=20_000)`` builds a scenario of identical flats (ten
devices each: kitchen safety and elder care) spread over buildings of 500 devices, one gateway
per building, where every device reports every ``devices / rate`` seconds (with jitter), so
the community as a whole sends ``rate`` readings a second. The same engine and models as any
scenario: load is realistic readings, not a constant payload.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from firmware_sim.scenario import (
    BuildingSpec,
    DeviceSpec,
    ResidentSpec,
    Scenario,
    SiteSpec,
    Template,
    UnitSpec,
)

UNIT_DEVICES = 10
BUILDING_DEVICES = 500


def load_scenario(
    devices: int = 10_000,
    rate: float = 20_000.0,
    *,
    duration_s: float = 60.0,
    seed: int = 7,
    start: datetime | None = None,
) -> Scenario:
    """A community of about ``devices`` devices sending ``rate`` readings/s in total."""
    if devices < UNIT_DEVICES or rate <= 0:
        raise ValueError(f"load needs at least {UNIT_DEVICES} devices and a positive rate")
    units = math.ceil(devices / UNIT_DEVICES)
    interval = units * UNIT_DEVICES / rate
    kinds = ("gas", "co", "smoke", "heat", "pir", "pir", "pir", "door", "bed", "wearable")
    rooms = ("kitchen", "kitchen", "kitchen", "kitchen", "kitchen", "living", "bedroom")
    template = Template(
        residents=[ResidentSpec(id="r", elderly=True, wake_h=6.0)],
        devices=[
            DeviceSpec(
                kind=kind,  # type: ignore[arg-type]
                room=rooms[n] if n < len(rooms) else None,
                resident="r" if kind in ("bed", "wearable") else None,
                interval_s=interval,
                jitter=0.2,
            )
            for n, kind in enumerate(kinds)
        ],
    )
    per_building = BUILDING_DEVICES // UNIT_DEVICES  # 50 units: 10 floors of 5
    buildings = []
    left = units
    number = 0
    while left > 0:
        number += 1
        here = min(left, per_building)
        floors = math.ceil(here / 5)
        buildings.append(
            BuildingSpec(
                id=f"L{number}",
                units=[UnitSpec(floors=[1, floors], per_floor=5, template="flat")],
            )
        )
        left -= floors * 5
    return Scenario(
        name=f"load-{devices}",
        start=start or datetime(2025, 3, 3, 10, 0, tzinfo=UTC),
        duration=duration_s,
        seed=seed,
        templates={"flat": template},
        sites=[SiteSpec(id="load", buildings=buildings)],
    )
