"""A small community with every family, and helpers to drive it on the simulated clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import wire
from firmware_sim import community
from firmware_sim.community import Community
from firmware_sim.engine import Engine
from firmware_sim.scenario import Scenario, load_yaml

SMALL = """\
name: small
start: 2025-03-03T05:00:00+08:00
duration: 1h
templates:
  elder:
    residents: [{id: e, elderly: true, wake_h: 5.5}]
    devices:
      - {kind: gas, room: kitchen}
      - {kind: co, room: kitchen}
      - {kind: smoke, room: kitchen}
      - {kind: heat, room: kitchen}
      - {kind: pir, room: kitchen}
      - {kind: pir, room: hallway}
      - {kind: door, room: hallway}
      - {kind: bed, resident: e}
      - {kind: wearable, resident: e}
      - {kind: sos, resident: e}
sites:
  - id: s
    buildings:
      - id: b1
        units:
          - {floors: [1, 2], per_floor: 3, template: elder}
        devices:
          - {kind: flood, room: garage}
          - {kind: locker, doors: 4, chilled: 1}
          - {kind: pump}
          - {kind: electrical}
          - {kind: speaker}
"""


def small(extra: str = "", seed: int | None = None) -> Community:
    scenario = load_yaml(SMALL + extra, Scenario, "<small>")
    return community.build(scenario, seed=seed)


def readings(c: Community) -> list[wire.Reading]:
    return [t.reading for t in Engine(c).transmissions() if t.reading is not None]


def series(
    c: Community, device: str, metric: str, keep: Callable[[datetime], bool] = lambda _: True
) -> list[tuple[datetime, float]]:
    return [
        (r.ts, r.values[metric])
        for r in readings(c)
        if r.device == device and metric in r.values and keep(r.ts)
    ]
