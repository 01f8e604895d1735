"""Device models for every family the simulator knows: pure, seeded, time passed in.

Each model is a ``SimDevice``: parameters, a ``random.Random`` seeded from (seed, device id),
and ``values(now)``: what the device measures at ``now`` (daily cycle + noise + drift + the
overlays that incidents put on it). ``reading(now)`` wraps the values in a ``wire.Reading``
with the next sequence number; ``next_interval(values)`` says when it reports again: its
normal interval with jitter, or its shorter alarm interval while a value is abnormal (real
detectors report on change). Metric names and units are those of ``wire.metrics``; values are
clamped to each metric's physical range.

No I/O and no clock: the engine (``firmware_sim.engine``) decides when to ask.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, TypedDict, Unpack

import wire
from firmware_sim.household import Household, daily_load, local_hours
from wire.metrics import metric

Values = dict[str, float]
# An incident's effect: (values to change in place, seconds since the overlay began, device).
Apply = Callable[[Values, float, "SimDevice"], None]

_RANGES: dict[str, tuple[float, float]] = {}


class Common(TypedDict, total=False):
    """The keyword arguments every family takes (see ``SimDevice``)."""

    household: Household | None
    room: str | None
    resident: str | None
    interval_s: float | None
    jitter: float
    utc_offset_h: float


def _range(name: str) -> tuple[float, float]:
    found = _RANGES.get(name)
    if found is None:
        registered = metric(name)
        found = (registered.low, registered.high) if registered else (-math.inf, math.inf)
        _RANGES[name] = found
    return found


@dataclass(slots=True)
class Overlay:
    """An incident's effect on one device between ``start`` and ``end`` (None: to the end).

    ``reports`` are extra report times: an SOS press or a door forced open is sent at once,
    not at the next periodic report.
    """

    start: datetime
    end: datetime | None
    apply: Apply
    reports: tuple[datetime, ...] = ()

    def active(self, now: datetime) -> bool:
        return self.start <= now and (self.end is None or now < self.end)


class SimDevice:
    """What every simulated sensor shares: identity, randomness, battery, overlays."""

    kind: ClassVar[str] = "device"
    # Normal reporting interval and the one used while ``alarming`` (None: no change).
    default_interval_s: ClassVar[float] = 60.0
    alarm_interval_s: ClassVar[float | None] = None
    battery_powered: ClassVar[bool] = False
    battery_life_days: ClassVar[float] = 365.0

    def __init__(
        self,
        device_id: str,
        seed: int,
        *,
        household: Household | None = None,
        room: str | None = None,
        resident: str | None = None,
        interval_s: float | None = None,
        jitter: float = 0.1,
        utc_offset_h: float = 8.0,
    ) -> None:
        wire.topics.check_id(device_id, "device")
        self.device_id = device_id
        self.household = household
        self.room = room
        self.resident = resident
        self.interval_s = interval_s or self.default_interval_s
        self.jitter = jitter
        self.utc_offset_h = household.utc_offset_h if household else utc_offset_h
        self.rng = random.Random(f"{seed}:{device_id}")
        self.overlays: list[Overlay] = []
        self.commands: list[wire.Command] = []
        self.seq = 0
        self.battery_start = self.rng.uniform(55.0, 100.0) if self.battery_powered else None
        # Battery % lost per second; a fault may speed it up.
        self.drain_per_s = 100.0 / (self.battery_life_days * 86400.0)
        self._epoch: datetime | None = None
        self.battery_override: Callable[[datetime], float] | None = None

    # Values

    def base(self, now: datetime) -> Values:
        """Values without incidents: daily cycle, noise, drift. Families override this."""
        raise NotImplementedError

    def alarming(self, values: Values) -> bool:
        """Does the device see something abnormal (and so report at its alarm interval)?"""
        return False

    def values(self, now: datetime) -> Values:
        values = self.base(now)
        for overlay in self.overlays:
            if overlay.active(now):
                overlay.apply(values, (now - overlay.start).total_seconds(), self)
        if self.battery_start is not None:
            values["battery_pct"] = self.battery(now)
        for name, value in values.items():
            low, high = _range(name)
            values[name] = round(min(high, max(low, value)), 3)
        return values

    def battery(self, now: datetime) -> float:
        """Battery charge in %, after any fault that drains it."""
        if self.battery_override is not None:
            return max(0.0, self.battery_override(now))
        return self.natural_battery(now)

    def natural_battery(self, now: datetime) -> float:
        """Battery charge in %: a slow linear drain over the battery's life."""
        if self.battery_start is None:
            return 100.0
        if self._epoch is None:
            self._epoch = now
        spent = (now - self._epoch).total_seconds() * self.drain_per_s
        return max(0.0, self.battery_start - spent)

    def reading(self, now: datetime, values: Values | None = None) -> wire.Reading:
        reading = wire.Reading(
            device=self.device_id,
            seq=self.seq,
            ts=now,
            values=self.values(now) if values is None else values,
        )
        self.seq += 1
        return reading

    def next_interval(self, values: Values) -> float:
        interval = self.interval_s
        if self.alarm_interval_s is not None and self.alarming(values):
            interval = min(interval, self.alarm_interval_s)
        return interval * (1.0 + self.rng.uniform(-self.jitter, self.jitter))

    # Status and commands

    def actuators(self) -> dict[str, str]:
        return {}

    def status(
        self, now: datetime, state: Literal["online", "offline"] = "online"
    ) -> wire.DeviceStatus:
        return wire.DeviceStatus(
            device=self.device_id,
            state=state,
            ts=now,
            kind=self.kind,
            battery_pct=round(self.battery(now), 1) if self.battery_start is not None else None,
            actuators=self.actuators(),
        )

    def apply(self, cmd: wire.Command, now: datetime) -> None:
        """Carry out a command; families with actuators override this."""
        self.commands.append(cmd)

    # Helpers for the families

    def cooking(self, now: datetime) -> float:
        return self.household.cooking(now) if self.household else 0.0

    def in_kitchen(self) -> bool:
        return self.room in (None, "kitchen")

    def hour(self, now: datetime) -> float:
        return local_hours(now, self.utc_offset_h)[1]


# Life safety


class GasDetector(SimDevice):
    """Combustible gas in %LEL (methane or LPG), with a siren and a shut-off valve.

    A lit stove lets a trace of unburnt gas through; an LPG cylinder's heavier gas pools and
    airs out more slowly (``decay_tau_s``), which the leak overlay uses.
    """

    kind = "gas"
    alarm_interval_s = 2.0

    def __init__(
        self, device_id: str, seed: int, *, gas: str = "methane", **kw: Unpack[Common]
    ) -> None:
        super().__init__(device_id, seed, **kw)
        self.gas = gas
        self.decay_tau_s = 20.0 if gas == "methane" else 60.0
        self.baseline = 0.3 if gas == "methane" else 0.2
        self.drift_per_s = self.rng.gauss(0.0, 0.05) / 86400.0
        self.siren = False
        self.valve_closed_at: datetime | None = None
        self._t0: datetime | None = None

    def base(self, now: datetime) -> Values:
        if self._t0 is None:
            self._t0 = now
        drift = (now - self._t0).total_seconds() * self.drift_per_s
        value = self.baseline + drift + 0.5 * self.cooking(now) + self.rng.gauss(0.0, 0.1)
        return {"gas_lel": value}

    def alarming(self, values: Values) -> bool:
        return values.get("gas_lel", 0.0) > 5.0

    def actuators(self) -> dict[str, str]:
        return {
            "siren": "on" if self.siren else "off",
            "valve": "closed" if self.valve_closed_at else "open",
        }

    def apply(self, cmd: wire.Command, now: datetime) -> None:
        super().apply(cmd, now)
        match cmd.action:
            case "siren_on" | "siren_off":
                self.siren = cmd.action == "siren_on"
            case "valve_close":
                self.valve_closed_at = self.valve_closed_at or now
            case "valve_open":
                self.valve_closed_at = None
            case _:
                pass


class CoAlarm(SimDevice):
    """Carbon monoxide in ppm: near zero, nudged up by a gas stove while cooking."""

    kind = "co"
    alarm_interval_s = 10.0
    battery_powered = True
    battery_life_days = 7 * 365.0

    def __init__(self, device_id: str, seed: int, **kw: Unpack[Common]) -> None:
        super().__init__(device_id, seed, **kw)
        # How much CO this kitchen's stove adds at full cooking (a hood helps).
        self.cooking_ppm = self.rng.uniform(6.0, 18.0) * (1.0 if self.in_kitchen() else 0.3)

    def base(self, now: datetime) -> Values:
        value = 0.8 + self.cooking_ppm * self.cooking(now) + self.rng.gauss(0.0, 0.6)
        return {"co_ppm": value}

    def alarming(self, values: Values) -> bool:
        return values.get("co_ppm", 0.0) > 30.0


class SmokeDetector(SimDevice):
    """Smoke obscuration in %/m: clean air, a little haze when cooking (no alarm)."""

    kind = "smoke"
    alarm_interval_s = 5.0
    battery_powered = True
    battery_life_days = 10 * 365.0

    def __init__(self, device_id: str, seed: int, **kw: Unpack[Common]) -> None:
        super().__init__(device_id, seed, **kw)
        self.cooking_obs = self.rng.uniform(0.2, 0.6) * (1.0 if self.in_kitchen() else 0.2)

    def base(self, now: datetime) -> Values:
        value = 0.02 + self.cooking_obs * self.cooking(now) + abs(self.rng.gauss(0.0, 0.01))
        return {"smoke_obs": value}

    def alarming(self, values: Values) -> bool:
        return values.get("smoke_obs", 0.0) > 1.0


class HeatDetector(SimDevice):
    """Air temperature in °C: a daily cycle, a few degrees warmer in a kitchen while cooking."""

    kind = "heat"
    alarm_interval_s = 5.0
    battery_powered = True
    battery_life_days = 10 * 365.0

    def __init__(self, device_id: str, seed: int, **kw: Unpack[Common]) -> None:
        super().__init__(device_id, seed, **kw)
        self.room_c = self.rng.uniform(19.0, 24.0)
        self.cooking_c = self.rng.uniform(3.0, 7.0) * (1.0 if self.in_kitchen() else 0.2)

    def base(self, now: datetime) -> Values:
        daily = 1.5 * math.sin(2 * math.pi * (self.hour(now) - 9.0) / 24.0)
        value = self.room_c + daily + self.cooking_c * self.cooking(now)
        return {"temp_c": value + self.rng.gauss(0.0, 0.1)}

    def alarming(self, values: Values) -> bool:
        return values.get("temp_c", 0.0) > 40.0


class ElectricalMonitor(SimDevice):
    """An electrical fire monitor on a circuit: residual current (mA) and cable temperature."""

    kind = "electrical"
    default_interval_s = 30.0
    alarm_interval_s = 10.0

    def __init__(self, device_id: str, seed: int, **kw: Unpack[Common]) -> None:
        super().__init__(device_id, seed, **kw)
        self.leak_ma = self.rng.uniform(5.0, 20.0)
        self.ambient_c = self.rng.uniform(20.0, 27.0)

    def base(self, now: datetime) -> Values:
        load = daily_load(self.hour(now))
        return {
            "residual_ma": self.leak_ma + 8.0 * load + self.rng.gauss(0.0, 0.8),
            "cable_temp_c": self.ambient_c + 14.0 * load + self.rng.gauss(0.0, 0.2),
        }

    def alarming(self, values: Values) -> bool:
        return values.get("residual_ma", 0.0) > 100.0 or values.get("cable_temp_c", 0.0) > 60.0


class FloodSensor(SimDevice):
    """Water level in cm above the floor (garage, basement) or a sump's bottom."""

    kind = "flood"
    default_interval_s = 300.0
    alarm_interval_s = 10.0
    battery_powered = True
    battery_life_days = 3 * 365.0

    def base(self, now: datetime) -> Values:
        return {"water_level_cm": max(0.0, self.rng.gauss(0.0, 0.05))}

    def alarming(self, values: Values) -> bool:
        return values.get("water_level_cm", 0.0) > 1.0


# Parcel lockers


class LockerBank(SimDevice):
    """A smart parcel locker bank: per-door open/occupied, chilled compartments' temperature,
    tamper switch, PIN failures, the last opening's authorisation, power.

    Deliveries (daytime) fill doors, residents empty them; each report shows a door open when
    someone is using it. Per-door metrics are ``door_N_open``, ``door_N_occupied`` and
    ``door_N_temp_c`` (chilled doors only), N from 1.
    """

    kind = "locker"
    alarm_interval_s = 5.0
    max_doors: ClassVar[int] = 8

    def __init__(
        self, device_id: str, seed: int, *, doors: int = 6, chilled: int = 1, **kw: Unpack[Common]
    ) -> None:
        super().__init__(device_id, seed, **kw)
        if not 1 <= doors <= self.max_doors or not 0 <= chilled <= doors:
            raise ValueError(f"a locker bank has 1..{self.max_doors} doors, chilled <= doors")
        self.doors = doors
        self.chilled = chilled
        self.occupied_since: list[datetime | None] = [None] * doors
        self.chilled_c = [self.rng.uniform(3.0, 5.0) for _ in range(chilled)]

    def base(self, now: datetime) -> Values:
        hour = self.hour(now)
        busy = 0.03 if 8.0 <= hour < 21.0 else 0.002
        values: Values = {}
        any_open = 0.0
        oldest = 0.0
        for n in range(self.doors):
            since = self.occupied_since[n]
            opened = 0.0
            if self.rng.random() < busy:
                opened = 1.0
                self.occupied_since[n] = now if since is None else None
                since = self.occupied_since[n]
            if since is not None:
                oldest = max(oldest, (now - since).total_seconds() / 3600.0)
            values[f"door_{n + 1}_open"] = opened
            values[f"door_{n + 1}_occupied"] = 0.0 if since is None else 1.0
            any_open = max(any_open, opened)
            if n < self.chilled:
                warm = 2.0 if opened else 0.0
                values[f"door_{n + 1}_temp_c"] = self.chilled_c[n] + warm + self.rng.gauss(0.0, 0.2)
        values.update(
            door_open=any_open,
            tamper=0.0,
            pin_failures=1.0 if self.rng.random() < busy / 3 else 0.0,
            unlock_authorised=1.0,
            power_ok=1.0,
            parcel_age_h=oldest,
        )
        return values

    def alarming(self, values: Values) -> bool:
        # A failed PIN is sent at once, so that no attempt is lost between reports.
        return values.get("tamper", 0.0) > 0 or values.get("pin_failures", 0.0) >= 1


# Elder care


class PirSensor(SimDevice):
    """Passive infrared motion in one room: 1 if motion was seen in the reporting interval."""

    kind = "pir"
    battery_powered = True
    battery_life_days = 2 * 365.0

    def base(self, now: datetime) -> Values:
        chance = self.household.activity(self.room, now) if self.household else 0.1
        per_interval = 1.0 - (1.0 - chance) ** (self.interval_s / 60.0)
        return {"motion": 1.0 if self.rng.random() < per_interval else 0.0}


class DoorContact(SimDevice):
    """A door contact (the flat's front door): open while someone goes out or comes in."""

    kind = "door"
    battery_powered = True
    battery_life_days = 2 * 365.0

    def base(self, now: datetime) -> Values:
        household = self.household
        moving = household is not None and any(
            household.leaving_or_returning(r.resident, now) for r in household.residents
        )
        return {"contact_open": 1.0 if moving and self.rng.random() < 0.8 else 0.0}


class BedSensor(SimDevice):
    """Bed occupancy (a pressure mat): its resident (or anyone in the unit) is in bed."""

    kind = "bed"

    def base(self, now: datetime) -> Values:
        household = self.household
        if household is None:
            return {"bed_occupied": 0.0}
        if self.resident is not None:
            busy = household.home(self.resident, now) and household.asleep(self.resident, now)
        else:
            busy = household.in_bed(now)
        return {"bed_occupied": 1.0 if busy else 0.0}


class Wearable(SimDevice):
    """A resident's wristband: heart rate, SpO2, fall flag and battery (charged overnight)."""

    kind = "wearable"
    alarm_interval_s = 5.0
    battery_powered = True

    def __init__(
        self, device_id: str, seed: int, *, elderly: bool = True, **kw: Unpack[Common]
    ) -> None:
        super().__init__(device_id, seed, **kw)
        self.rest_bpm = self.rng.uniform(60.0, 78.0)
        self.spo2 = self.rng.uniform(94.5, 98.0) if elderly else self.rng.uniform(96.5, 99.0)
        self.drain_pct_h = self.rng.uniform(2.5, 4.5)

    def _asleep(self, now: datetime) -> bool:
        h, r = self.household, self.resident
        return h is not None and r is not None and h.asleep(r, now)

    def base(self, now: datetime) -> Values:
        asleep = self._asleep(now)
        active = self.cooking(now) > 0.1 or (
            self.household is not None
            and self.resident is not None
            and not self.household.home(self.resident, now)
        )
        bpm = self.rest_bpm * (0.85 if asleep else 1.25 if active else 1.0)
        return {
            "heart_rate_bpm": bpm + self.rng.gauss(0.0, 2.5),
            "spo2_pct": min(100.0, self.spo2 + self.rng.gauss(0.0, 0.6)),
            "fall": 0.0,
        }

    def natural_battery(self, now: datetime) -> float:
        # Charged on the nightstand overnight, drains while worn in the day.
        hour = self.hour(now)
        awake_h = hour - 6.0 if hour >= 6.0 else 0.0
        return max(0.0, 100.0 - self.drain_pct_h * awake_h)

    def alarming(self, values: Values) -> bool:
        return values.get("fall", 0.0) > 0 or not 40.0 <= values.get("heart_rate_bpm", 70) <= 130


class SosButton(SimDevice):
    """A wall or pendant SOS button: a heartbeat every hour, ``sos`` 1 when pressed."""

    kind = "sos"
    default_interval_s = 3600.0
    battery_powered = True
    battery_life_days = 2 * 365.0

    def base(self, now: datetime) -> Values:
        return {"sos": 0.0}


# Water supply


class PumpRoom(SimDevice):
    """A booster pump's condition monitor: vibration, motor current, outlet pressure, flow and
    motor temperature, following the estate's water demand over the day, with slow wear."""

    kind = "pump"
    default_interval_s = 10.0

    def __init__(self, device_id: str, seed: int, **kw: Unpack[Common]) -> None:
        super().__init__(device_id, seed, **kw)
        self.rated_flow = self.rng.uniform(40.0, 70.0)
        self.wear_per_s = self.rng.uniform(0.0, 0.02) / 86400.0  # mm/s more vibration a day
        self._t0: datetime | None = None

    def base(self, now: datetime) -> Values:
        if self._t0 is None:
            self._t0 = now
        demand = daily_load(self.hour(now))
        wear = (now - self._t0).total_seconds() * self.wear_per_s
        g = self.rng.gauss
        return {
            "flow_m3h": self.rated_flow * (0.3 + 0.6 * demand) + g(0.0, 0.8),
            "pressure_bar": 4.2 - 0.5 * demand + g(0.0, 0.04),
            "motor_current_a": 16.0 + 12.0 * demand + g(0.0, 0.3),
            "vibration_mm_s": 1.6 + 0.6 * demand + wear + abs(g(0.0, 0.12)),
            "temp_c": 34.0 + 9.0 * demand + g(0.0, 0.2),
        }


FAMILIES: dict[str, type[SimDevice]] = {
    cls.kind: cls
    for cls in (
        GasDetector,
        CoAlarm,
        SmokeDetector,
        HeatDetector,
        ElectricalMonitor,
        FloodSensor,
        LockerBank,
        PirSensor,
        DoorContact,
        BedSensor,
        Wearable,
        SosButton,
        PumpRoom,
    )
}
# Every family, with the speaker (which plays broadcasts and sends no readings).
KINDS = (*FAMILIES, "speaker")
