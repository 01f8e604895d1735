"""Device faults, injected between a device's model and the network.

A fault changes what a device sends, not what is really there: ``dropout`` and
``dead_battery`` silence it; ``stuck``, ``noise_burst`` and ``drift`` corrupt its values;
``duplicate``, ``reorder``, ``delay`` and ``clock_skew`` disturb delivery and timestamps;
``malformed`` replaces a share of its payloads with bytes a gateway must reject. Every
injected fault is listed in the ground truth (``wire.replay.DeviceFault``) so that health
rules can be scored as well.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

import wire
from firmware_sim.families import SimDevice, Values, _range
from firmware_sim.scenario import FaultSpec, seconds
from wire.replay import DeviceFault

if TYPE_CHECKING:  # community imports this module
    from firmware_sim.community import Community

# Bytes a broken firmware might send, one of each of the gateway's rejection reasons.
MALFORMED = (
    b'{"v":1,"device":"',  # truncated JSON
    b'{"v":1,"device":"x","seq":1,"ts":"2025-01-01T00:00:00Z","values":{"t":NaN}}',
    b'{"v":1,"seq":"one","values":[]}',  # wrong types, missing fields
    b"\xff\xfe\x00garbage",  # not UTF-8
    b"",  # empty
    b"[]",  # an empty batch
)
DEFAULT_MAGNITUDE = {
    "noise_burst": 0.1,  # sigma, as a share of the metric's range
    "drift": 0.05,  # per hour, as a share of the metric's range
    "delay": 30.0,  # seconds
    "clock_skew": 600.0,  # seconds ahead (negative: behind)
}
_BOOLEAN = {"door_open", "occupied", "tamper", "unlock_authorised", "power_ok", "motion"}


@dataclass(slots=True)
class Transmission:
    """What leaves a device: a reading (or junk bytes), arriving at the gateway at ``at``."""

    at: datetime
    device: str
    reading: wire.Reading | None
    payload: bytes | None = None  # set for a malformed message (reading is None)
    duplicate: bool = False


@dataclass(slots=True)
class ActiveFault:
    fault: str
    start: datetime
    end: datetime
    rate: float
    magnitude: float
    rng: random.Random
    frozen: Values | None = None

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(slots=True)
class FaultInjector:
    """The faults of every device, applied by the engine at each report."""

    faults: dict[str, list[ActiveFault]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, device: str, fault: ActiveFault) -> None:
        self.faults.setdefault(device, []).append(fault)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def silent(self, device: SimDevice, now: datetime) -> bool:
        for f in self.faults.get(device.device_id, ()):
            if f.fault == "dropout" and f.covers(now):
                self.count("dropout")
                return True
            if f.fault == "dead_battery" and now >= f.start and device.battery(now) <= 0.0:
                self.count("dead_battery")
                return True
        return False

    def alter(self, device: SimDevice, values: Values, now: datetime) -> Values:
        for f in self.faults.get(device.device_id, ()):
            if not f.covers(now):
                continue
            match f.fault:
                case "stuck":
                    if f.frozen is None:
                        f.frozen = dict(values)
                    battery = values.get("battery_pct")
                    values = dict(f.frozen)
                    if battery is not None:
                        values["battery_pct"] = battery
                    self.count("stuck")
                case "noise_burst":
                    for name in values:
                        if name != "battery_pct" and not _boolean(name):
                            values[name] = round(
                                values[name] + f.rng.gauss(0.0, f.magnitude * _span(name)), 3
                            )
                    self.count("noise_burst")
                case "drift":
                    hours = (now - f.start).total_seconds() / 3600.0
                    for name in values:
                        if name != "battery_pct" and not _boolean(name):
                            values[name] = round(
                                values[name] + f.magnitude * _span(name) * hours, 3
                            )
                    self.count("drift")
                case _:
                    pass
        return values

    def deliver(
        self, device: SimDevice, reading: wire.Reading, interval_s: float
    ) -> list[Transmission]:
        now = reading.ts
        out = [Transmission(now, device.device_id, reading)]
        for f in self.faults.get(device.device_id, ()):
            if not f.covers(now):
                continue
            match f.fault:
                case "clock_skew":
                    skewed = msgspec.structs.replace(
                        reading, ts=reading.ts + timedelta(seconds=f.magnitude)
                    )
                    out = [Transmission(t.at, t.device, skewed) for t in out]
                    self.count("clock_skew")
                case "delay":
                    out = [
                        Transmission(t.at + timedelta(seconds=f.magnitude), t.device, t.reading)
                        for t in out
                    ]
                    self.count("delay")
                case "reorder" if f.rng.random() < f.rate:
                    # Late by one and a half intervals: it arrives after the next reading.
                    late = timedelta(seconds=1.5 * interval_s)
                    out = [Transmission(t.at + late, t.device, t.reading) for t in out]
                    self.count("reorder")
                case "duplicate" if f.rng.random() < f.rate:
                    first = out[0]
                    again = timedelta(seconds=f.rng.uniform(0.05, 2.0))
                    out.append(
                        Transmission(first.at + again, first.device, first.reading, duplicate=True)
                    )
                    self.count("duplicate")
                case "malformed" if f.rng.random() < f.rate:
                    junk = MALFORMED[f.rng.randrange(len(MALFORMED))]
                    out = [Transmission(t.at, t.device, None, junk) for t in out]
                    self.count("malformed")
                case _:
                    pass
        return out


def _span(name: str) -> float:
    low, high = _range(name)
    return 100.0 if high - low == float("inf") else high - low


def _boolean(name: str) -> bool:
    base = name.rsplit("_", 1)[-1] if name.startswith("door_") else name
    return name in _BOOLEAN or base in ("open", "occupied") or name in ("fall", "sos")


def apply(spec: FaultSpec, community: Community, rng: random.Random) -> list[DeviceFault]:
    """Attach the fault to its device(s); return the ground truth entries."""
    if spec.device is not None:
        targets = [community.device(spec.device)]
    else:
        family = [d for d in community.devices if d.kind == spec.kind]
        count = round(spec.share * len(family))
        targets = sorted(rng.sample(family, count), key=lambda d: d.device_id)
    start = community.start + timedelta(seconds=seconds(spec.at))
    end = (
        community.end
        if spec.duration is None
        else min(community.end, start + timedelta(seconds=seconds(spec.duration)))
    )
    magnitude = spec.magnitude
    if magnitude is None:
        magnitude = DEFAULT_MAGNITUDE.get(spec.fault, 0.0)
    truth: list[DeviceFault] = []
    for device in targets:
        fault_rng = random.Random(f"{community.seed}:{spec.fault}:{device.device_id}:{start}")
        active = ActiveFault(spec.fault, start, end, spec.rate, magnitude, fault_rng)
        if spec.fault == "dead_battery":
            # The charge runs down to nothing over the fault's window, and stays dead.
            active.end = community.end
            _drain(device, start, end)
        community.injector.add(device.device_id, active)
        truth.append(
            DeviceFault(device=device.device_id, fault=spec.fault, start=start, end=active.end)
        )
    return truth


def _drain(device: SimDevice, start: datetime, empty_at: datetime) -> None:
    window = max(1.0, (empty_at - start).total_seconds())
    normal = device.natural_battery
    level: dict[str, float] = {}

    def drained(now: datetime) -> float:
        if now < start:
            return normal(now)
        if "at_start" not in level:
            level["at_start"] = normal(start)
        share = min(1.0, (now - start).total_seconds() / window)
        return level["at_start"] * (1.0 - share)

    if device.battery_start is None:
        device.battery_start = 100.0  # a mains device on a backup battery
    device.battery_override = drained
