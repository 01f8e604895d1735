"""Incidents: what each kind does to the devices' values (its signature), and the alerts a
correct system must raise for it (the ground truth).

Every signature is a deterministic function of time since the incident began (noise comes
from the devices), so the latest acceptable alert time is computed from the same curve the
devices follow. The alert kinds and severities are the simulator's contract with the rules;
docs/simulator.md lists them.

| incident | alert(s) expected (kind, severity, scope) | latest |
| --- | --- | --- |
| gas_leak | gas Severe (>=10 %LEL), gas Extreme (>=25 %LEL) | crossing + 60 s |
| co | co Severe, device | CFK 10 % COHb + 60 s |
| kitchen_fire | smoke Severe; heat Severe; fire Extreme (unit) | 3 %/m + 30 s; EN 54-5 ... |
| electrical_fault | electrical Severe | 300 mA or 70 °C + 60 s |
| flood | flood Severe | 2 cm + 60 s |
| fall | fall Severe, resident | + 90 s |
| sos | sos Extreme, resident | + 10 s |
| missed_routine | inactivity Moderate, resident | + latest_after |
| night_wandering | night_wandering Moderate, resident | + 5 min |
| locker_forced | locker_forced Severe | + 60 s |
| pin_brute_force | pin_brute_force Moderate | + 5 min |
| chilled_warming | locker_chilled Moderate | 8 °C + 10 min |
| pump_cavitation | pump_anomaly Moderate | ramp + 10 min |
| cooking | none; co, smoke, fire and gas are forbidden | – |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from firmware_sim.errors import ScenarioError
from firmware_sim.families import GasDetector, LockerBank, Overlay, SimDevice, Values
from firmware_sim.scenario import (
    CarbonMonoxide,
    ChilledWarming,
    Cooking,
    ElectricalFault,
    Fall,
    Flood,
    GasLeak,
    IncidentSpec,
    KitchenFire,
    LockerForced,
    MissedRoutine,
    NightWandering,
    PinBruteForce,
    PumpCavitation,
    Sos,
    seconds,
)
from wire.models import Severity
from wire.replay import ExpectedAlert, Incident

if TYPE_CHECKING:  # community imports this module
    from firmware_sim.community import Community, Unit

LIFE_SAFETY = {"gas_leak", "co", "kitchen_fire", "electrical_fault", "flood", "fall", "sos"}
GAS_RATE = {"fast": 2.0, "slow": 0.02}  # %LEL per second
SMOKE_ALARM = 3.0  # %/m: a photoelectric alarm's typical sensitivity (about 1 %/ft)
RESIDUAL_ALARM_MA = 300.0  # electrical fire monitors' common residual-current setting
CABLE_ALARM_C = 70.0  # PVC insulation's rated conductor temperature
FLOOD_ALARM_CM = 2.0
CHILLED_LIMIT_C = 8.0
# EN 54-5 class A1: "by" response time (s) at each rate of rise (K/min), from 25 °C.
EN54_BY_S = ((1, 2420), (3, 820), (5, 500), (10, 260), (20, 140), (30, 100))
Scope = Literal["device", "unit", "building", "resident"]


def _at(t0: datetime, s: float) -> datetime:
    return t0 + timedelta(seconds=s)


def cohb_crossing_s(
    ppm_at: Callable[[float], float], limit_s: float, target: float = 10.0
) -> float | None:
    """Seconds until carboxyhaemoglobin reaches ``target`` % under a CO profile (CFK, the
    simplified form in docs/STANDARDS: B = 0.0404, COHb0 = 0.5 %), or None within the limit."""
    cohb = 0.5
    step = 10.0
    decay = math.exp(-(step / 60.0) / (2398 * 0.0404))
    t = 0.0
    while t <= limit_s:
        ppm = ppm_at(t)
        cohb = cohb * decay + 218 * (1 - decay) * (0.0003 + ppm / 1316)
        t += step
        if cohb >= target:
            return t
    return None


def en54_by_s(rate_k_min: float) -> float:
    """EN 54-5 class A1's "respond by" time for a rate of rise (the slower neighbour's)."""
    for rate, by in reversed(EN54_BY_S):
        if rate_k_min >= rate:
            return float(by)
    return float(EN54_BY_S[0][1])


class _Context:
    def __init__(self, spec: IncidentSpec, community: Community, index: int) -> None:
        self.spec = spec
        self.c = community
        self.start = _at(community.start, seconds(spec.at))
        self.id = spec.id or f"{kind_of(spec)}-{index + 1}"
        self.expect: list[ExpectedAlert] = []
        self.forbid: list[ExpectedAlert] = []

    def fail(self, problem: str) -> ScenarioError:
        return ScenarioError(self.c.scenario.name, None, f"incident {self.id}", problem)

    def overlay(
        self,
        device: SimDevice,
        apply: Callable[[Values, float, SimDevice], None],
        until_s: float | None,
        reports: tuple[float, ...] = (),
    ) -> None:
        end = None if until_s is None else _at(self.start, until_s)
        device.overlays.append(
            Overlay(self.start, end, apply, tuple(_at(self.start, s) for s in reports))
        )

    def alert(
        self,
        kind: str,
        severity: Severity,
        latest_s: float,
        *,
        scope: Scope = "device",
        device: SimDevice | None = None,
        unit: Unit | None = None,
        forbid: bool = False,
    ) -> None:
        info = self.c.info[device.device_id] if device else None
        alert = ExpectedAlert(
            kind=kind,
            severity=severity,
            scope=scope,
            device=device.device_id if device else None,
            unit=unit.id if unit else (info.unit if info else None),
            building=unit.building if unit else (info.building if info else None),
            latest=_at(self.start, latest_s),
        )
        (self.forbid if forbid else self.expect).append(alert)

    def kinds(self, unit: Unit, kind: str) -> list[SimDevice]:
        found = unit.of_kind(kind)
        if not found:
            raise self.fail(f"unit {unit.key} has no {kind} device")
        return found


def _gas_leak(x: _Context, spec: GasLeak) -> float:
    unit = x.c.unit(spec.unit)
    rate = GAS_RATE[spec.speed]
    source_s = seconds(spec.duration)
    sensors = [d for d in x.kinds(unit, "gas") if isinstance(d, GasDetector)]
    tau = max(d.decay_tau_s for d in sensors)
    for sensor in sensors:

        def leak(v: Values, t: float, dev: SimDevice, sensor: GasDetector = sensor) -> None:
            peak = spec.peak_lel - sensor.baseline
            stop = source_s
            if sensor.valve_closed_at is not None:
                stop = min(stop, max(0.0, (sensor.valve_closed_at - x.start).total_seconds()))
            grown = min(peak, rate * min(t, stop))
            if t > stop:
                grown *= math.exp(-(t - stop) / sensor.decay_tau_s)
            v["gas_lel"] += grown

        x.overlay(sensor, leak, source_s + 12 * tau)
    base = max(d.baseline for d in sensors)
    top = min(spec.peak_lel, base + rate * source_s)
    for level, severity in ((10.0, Severity.SEVERE), (25.0, Severity.EXTREME)):
        if top >= level + 1.0:
            for sensor in sensors:
                x.alert("gas", severity, (level - base) / rate + 60.0, device=sensor)
    # The incident lasts until the gas is back under 5 %LEL.
    return source_s + tau * math.log(max(1.0, (top - base) / 5.0))


def _co(x: _Context, spec: CarbonMonoxide) -> float:
    unit = x.c.unit(spec.unit)
    ramp, length = seconds(spec.ramp), seconds(spec.duration)

    def ppm(t: float) -> float:
        if t >= length:
            return spec.ppm * math.exp(-(t - length) / 300.0)
        wobble = 0.6 * math.sin(2 * math.pi * t / 180.0) + 0.4 * math.sin(2 * math.pi * t / 47.0)
        return spec.ppm * min(1.0, t / ramp if ramp else 1.0) * (1 + spec.fluctuation * wobble)

    for alarm in x.kinds(unit, "co"):
        x.overlay(alarm, lambda v, t, dev: v.__setitem__("co_ppm", v["co_ppm"] + ppm(t)), None)
        crossing = cohb_crossing_s(ppm, length)
        if crossing is not None:
            x.alert("co", Severity.SEVERE, crossing + 60.0, device=alarm)
    return length + 900.0


def _kitchen_fire(x: _Context, spec: KitchenFire) -> float:
    unit = x.c.unit(spec.unit)
    heat_after, length = seconds(spec.heat_after), seconds(spec.duration)
    rise = spec.rise_k_min / 60.0

    def smoke(v: Values, t: float, dev: SimDevice) -> None:
        v["smoke_obs"] += 12.0 * (1 - math.exp(-t / 120.0))

    def heat(v: Values, t: float, dev: SimDevice) -> None:
        v["temp_c"] += min(80.0, max(0.0, t - heat_after) * rise)

    def co(v: Values, t: float, dev: SimDevice) -> None:
        v["co_ppm"] += 250.0 * min(1.0, max(0.0, t - heat_after / 2) / 300.0)

    smoke_s = -120.0 * math.log(1 - SMOKE_ALARM / 12.0)
    for device in x.kinds(unit, "smoke"):
        x.overlay(device, smoke, length)
        x.alert("smoke", Severity.SEVERE, smoke_s + 30.0, device=device)
    heat_by = heat_after + en54_by_s(spec.rise_k_min)
    for device in unit.of_kind("heat"):
        x.overlay(device, heat, length)
        x.alert("heat", Severity.SEVERE, heat_by, device=device)
    for device in unit.of_kind("co"):
        x.overlay(device, co, length)
    x.alert("fire", Severity.EXTREME, heat_by + 30.0, scope="unit", unit=unit)
    return length


def _electrical(x: _Context, spec: ElectricalFault) -> float:
    device = x.c.device(spec.device, "electrical")
    ramp, length = seconds(spec.ramp), seconds(spec.duration)

    def fault(v: Values, t: float, dev: SimDevice) -> None:
        share = min(1.0, t / ramp) if ramp else 1.0
        v["residual_ma"] += share * spec.residual_ma
        v["cable_temp_c"] += share * max(0.0, spec.cable_c - v["cable_temp_c"])

    x.overlay(device, fault, length)
    times = []
    if spec.residual_ma > RESIDUAL_ALARM_MA:
        times.append(ramp * RESIDUAL_ALARM_MA / spec.residual_ma)
    if spec.cable_c > CABLE_ALARM_C + 5:
        times.append(ramp * (CABLE_ALARM_C - 20.0) / (spec.cable_c - 20.0))
    if times:
        x.alert("electrical", Severity.SEVERE, min(times) + 60.0, device=device)
    return length


def _flood(x: _Context, spec: Flood) -> float:
    device = x.c.device(spec.device, "flood")
    length = seconds(spec.duration)
    per_s = spec.cm_per_min / 60.0

    def water(v: Values, t: float, dev: SimDevice) -> None:
        level = min(spec.peak_cm, per_s * min(t, length))
        if t > length:
            level *= math.exp(-(t - length) / 600.0)
        v["water_level_cm"] += level

    x.overlay(device, water, length + 3600.0)
    x.alert("flood", Severity.SEVERE, FLOOD_ALARM_CM / per_s + 60.0, device=device)
    return length


def _unit_devices(unit: Unit, *kinds: str) -> list[SimDevice]:
    return [d for d in unit.devices if d.kind in kinds]


def _set(name: str, value: float) -> Callable[[Values, float, SimDevice], None]:
    def apply(v: Values, t: float, dev: SimDevice) -> None:
        if name in v:
            v[name] = value

    return apply


def _resident_devices(x: _Context, resident_id: str, kind: str) -> list[SimDevice]:
    resident = x.c.resident(resident_id)
    own = [d for d in resident.unit.of_kind(kind) if d.resident in (None, resident_id)]
    return own


def _fall(x: _Context, spec: Fall) -> float:
    resident = x.c.resident(spec.resident)
    length = seconds(spec.duration)
    wearables = _resident_devices(x, spec.resident, "wearable")
    if not wearables:
        raise x.fail(f"resident {spec.resident} wears no wearable")

    def fallen(v: Values, t: float, dev: SimDevice) -> None:
        v["fall"] = 1.0 if t < 30.0 else 0.0
        v["heart_rate_bpm"] *= 1.25

    for wearable in wearables:
        x.overlay(wearable, fallen, length, reports=(0.0,))
    if len(resident.unit.household.residents) == 1:
        for pir in resident.unit.of_kind("pir"):
            x.overlay(pir, _set("motion", 0.0), length)
    x.alert("fall", Severity.SEVERE, 90.0, scope="resident", device=wearables[0])
    return length


def _sos(x: _Context, spec: Sos) -> float:
    buttons = _resident_devices(x, spec.resident, "sos")
    if not buttons:
        raise x.fail(f"resident {spec.resident} has no SOS button")
    button = buttons[0]

    def pressed(v: Values, t: float, dev: SimDevice) -> None:
        v["sos"] = 1.0

    x.overlay(button, pressed, 30.0, reports=(0.0, 5.0))
    x.alert("sos", Severity.EXTREME, 10.0, scope="resident", device=button)
    return seconds(spec.duration)


def _missed_routine(x: _Context, spec: MissedRoutine) -> float:
    resident = x.c.resident(spec.resident)
    unit = resident.unit
    length = seconds(spec.duration)
    for bed in unit.of_kind("bed"):
        if bed.resident in (None, spec.resident):
            x.overlay(bed, _set("bed_occupied", 1.0), length)
    for device in _unit_devices(unit, "pir"):
        x.overlay(device, _set("motion", 0.0), length)
    for device in _unit_devices(unit, "door"):
        x.overlay(device, _set("contact_open", 0.0), length)
    # Expected in the resident's flat: its motion sensors and door (no resident of their own)
    # are the resident-scoped rule's flat scope, so the alert names no one device.
    x.alert(
        "inactivity", Severity.MODERATE, seconds(spec.latest_after), scope="resident", unit=unit
    )
    return length


def _night_wandering(x: _Context, spec: NightWandering) -> float:
    resident = x.c.resident(spec.resident)
    unit = resident.unit
    length = seconds(spec.duration)
    doors = unit.of_kind("door")
    if not doors:
        raise x.fail(f"unit {unit.key} has no door contact")
    for door in doors:
        x.overlay(door, _set("contact_open", 1.0), 120.0, reports=(0.0,))
        x.overlay(door, _set("contact_open", 1.0), length, reports=(length - 60.0,))
    for pir in unit.of_kind("pir"):
        if pir.room in ("hallway", "living", None):
            x.overlay(pir, _set("motion", 1.0), 300.0)
    for bed in unit.of_kind("bed"):
        if bed.resident in (None, spec.resident):
            x.overlay(bed, _set("bed_occupied", 0.0), length)
    x.alert("night_wandering", Severity.MODERATE, 300.0, scope="resident", device=doors[0])
    return length


def _locker(x: _Context, device_id: str, door: int) -> LockerBank:
    device = x.c.device(device_id, "locker")
    assert isinstance(device, LockerBank)
    if door > device.doors:
        raise x.fail(f"locker {device_id} has {device.doors} doors, not {door}")
    return device


def _locker_forced(x: _Context, spec: LockerForced) -> float:
    device = _locker(x, spec.device, spec.door)
    length = seconds(spec.duration)

    def forced(v: Values, t: float, dev: SimDevice) -> None:
        v[f"door_{spec.door}_open"] = 1.0
        v.update(door_open=1.0, tamper=1.0, unlock_authorised=0.0)

    x.overlay(device, forced, length, reports=(0.0,))
    x.alert("locker_forced", Severity.SEVERE, 60.0, device=device)
    return length


def _pin_brute_force(x: _Context, spec: PinBruteForce) -> float:
    device = _locker(x, spec.device, 1)
    length = seconds(spec.duration)
    per_s = spec.attempts_per_min / 60.0
    last = {"t": 0.0}

    def attempts(v: Values, t: float, dev: SimDevice) -> None:
        count = math.floor(per_s * t) - math.floor(per_s * last["t"])
        last["t"] = t
        v["pin_failures"] += max(0, count)

    x.overlay(device, attempts, length, reports=(1.0 / per_s,))
    x.alert("pin_brute_force", Severity.MODERATE, 300.0, device=device)
    return length


def _chilled(x: _Context, spec: ChilledWarming) -> float:
    device = _locker(x, spec.device, spec.door)
    if spec.door > device.chilled:
        raise x.fail(f"door {spec.door} of {spec.device} is not chilled")
    length = seconds(spec.duration)
    warm_s = 0.6 * length
    start_c = device.chilled_c[spec.door - 1]
    name = f"door_{spec.door}_temp_c"

    def warming(v: Values, t: float, dev: SimDevice) -> None:
        v[name] += (spec.peak_c - start_c) * min(1.0, t / warm_s)

    x.overlay(device, warming, length)
    crossing = warm_s * (CHILLED_LIMIT_C - start_c) / (spec.peak_c - start_c)
    x.alert("locker_chilled", Severity.MODERATE, crossing + 600.0, device=device)
    return length


def _cavitation(x: _Context, spec: PumpCavitation) -> float:
    device = x.c.device(spec.device, "pump")
    ramp, length = seconds(spec.ramp), seconds(spec.duration)

    def cavitating(v: Values, t: float, dev: SimDevice) -> None:
        s = spec.severity * (min(1.0, t / ramp) if ramp else 1.0)
        g = dev.rng.gauss
        v["vibration_mm_s"] += s * 5.0 * (1.0 + 0.6 * abs(g(0.0, 1.0)))
        v["pressure_bar"] += -0.7 * s + g(0.0, 0.25 * s)
        v["flow_m3h"] *= 1.0 - 0.25 * s
        v["motor_current_a"] += g(0.0, 1.5 * s)
        v["temp_c"] += 3.0 * s * min(1.0, t / max(length, 1.0))

    x.overlay(device, cavitating, length)
    x.alert("pump_anomaly", Severity.MODERATE, ramp + 600.0, device=device)
    return length


def _cooking(x: _Context, spec: Cooking) -> float:
    unit = x.c.unit(spec.unit)
    length = seconds(spec.duration)

    def cook(v: Values, t: float, dev: SimDevice) -> None:
        share = min(1.0, t / 120.0)
        if "co_ppm" in v:
            v["co_ppm"] += share * (22.0 + 6.0 * math.sin(2 * math.pi * t / 200.0))
        if "smoke_obs" in v:
            v["smoke_obs"] += share * 0.8
        if "temp_c" in v:
            v["temp_c"] += share * 8.0
        if "gas_lel" in v:
            v["gas_lel"] += share * 1.0

    for device in _unit_devices(unit, "co", "smoke", "heat", "gas"):
        if device.room in (None, "kitchen"):
            x.overlay(device, cook, length)
    end = length + 600.0
    for kind in ("co", "smoke", "fire", "gas"):
        x.alert(kind, Severity.MINOR, end, scope="unit", unit=unit, forbid=True)
    return length


def kind_of(spec: IncidentSpec) -> str:
    tag = type(spec).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def apply(spec: IncidentSpec, community: Community, index: int) -> Incident:
    """Put the incident's signature on its devices; return its ground truth."""
    x = _Context(spec, community, index)
    place: Unit | str  # the unit, or the building of a building-level device
    match spec:
        case GasLeak():
            length, place = _gas_leak(x, spec), community.unit(spec.unit)
        case CarbonMonoxide():
            length, place = _co(x, spec), community.unit(spec.unit)
        case KitchenFire():
            length, place = _kitchen_fire(x, spec), community.unit(spec.unit)
        case Cooking():
            length, place = _cooking(x, spec), community.unit(spec.unit)
        case ElectricalFault():
            length, place = _electrical(x, spec), community.info[spec.device].building
        case Flood():
            length, place = _flood(x, spec), community.info[spec.device].building
        case Fall():
            length, place = _fall(x, spec), community.resident(spec.resident).unit
        case Sos():
            length, place = _sos(x, spec), community.resident(spec.resident).unit
        case MissedRoutine():
            length, place = _missed_routine(x, spec), community.resident(spec.resident).unit
        case NightWandering():
            length, place = _night_wandering(x, spec), community.resident(spec.resident).unit
        case LockerForced():
            length, place = _locker_forced(x, spec), community.info[spec.device].building
        case PinBruteForce():
            length, place = _pin_brute_force(x, spec), community.info[spec.device].building
        case ChilledWarming():
            length, place = _chilled(x, spec), community.info[spec.device].building
        case PumpCavitation():
            length, place = _cavitation(x, spec), community.info[spec.device].building
    building = place if isinstance(place, str) else place.building
    site = next(
        (i.site for i in community.info.values() if i.building == building),
        community.scenario.sites[0].id,
    )
    kind = kind_of(spec)
    return Incident(
        id=x.id,
        kind=kind,
        life_safety=kind in LIFE_SAFETY,
        site=site,
        building=building,
        unit=None if isinstance(place, str) else place.id,
        start=x.start,
        end=min(community.end, _at(x.start, length)),
        expect=x.expect,
        forbid=x.forbid,
    )
