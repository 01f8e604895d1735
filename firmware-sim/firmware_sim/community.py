"""A scenario made real: the community's devices, households and residents, with the
scenario's incidents and faults applied and its ground truth written down.

``build(scenario, seed=..., start=...)`` is pure (no I/O): the recorder and the MQTT runner
both drive the ``Community`` it returns through ``firmware_sim.engine``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from firmware_sim import faults as fault_mod
from firmware_sim import incidents as incident_mod
from firmware_sim.errors import ScenarioError
from firmware_sim.families import FAMILIES, Common, GasDetector, LockerBank, SimDevice
from firmware_sim.household import Household, Routine
from firmware_sim.scenario import (
    DeviceSpec,
    ResidentSpec,
    Scenario,
    UnitSpec,
    seconds,
)
from firmware_sim.speaker import Speaker
from wire.replay import DeviceFault, DeviceInfo, GroundTruth, Incident


@dataclass(slots=True)
class Unit:
    site: str
    gateway: str
    building: str
    id: str
    household: Household
    devices: list[SimDevice] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.building}/{self.id}"

    def of_kind(self, kind: str) -> list[SimDevice]:
        return [d for d in self.devices if d.kind == kind]


@dataclass(slots=True)
class Resident:
    id: str
    unit: Unit
    routine: Routine


@dataclass(slots=True)
class Community:
    scenario: Scenario
    seed: int
    start: datetime
    end: datetime
    devices: list[SimDevice] = field(default_factory=list)
    speakers: list[Speaker] = field(default_factory=list)
    info: dict[str, DeviceInfo] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    residents: dict[str, Resident] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)
    faults: list[DeviceFault] = field(default_factory=list)
    injector: fault_mod.FaultInjector = field(default_factory=fault_mod.FaultInjector)
    by_id: dict[str, SimDevice] = field(default_factory=dict)

    def device(self, device_id: str, kind: str | None = None) -> SimDevice:
        found = self.by_id.get(device_id)
        if found is None or (kind is not None and found.kind != kind):
            what = f"{kind} device" if kind else "device"
            raise ScenarioError(self.scenario.name, None, "", f"no {what} {device_id!r}")
        return found

    def unit(self, key: str) -> Unit:
        found = self.units.get(key)
        if found is None:
            raise ScenarioError(
                self.scenario.name, None, "", f"no unit {key!r} (write building/unit)"
            )
        return found

    def resident(self, resident_id: str) -> Resident:
        found = self.residents.get(resident_id)
        if found is None:
            raise ScenarioError(self.scenario.name, None, "", f"no resident {resident_id!r}")
        return found

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(
            scenario=self.scenario.name,
            seed=self.seed,
            start=self.start,
            end=self.end,
            incidents=sorted(self.incidents, key=lambda i: (i.start, i.id)),
            faults=sorted(self.faults, key=lambda f: (f.start, f.device, f.fault)),
        )

    def device_infos(self) -> list[DeviceInfo]:
        return [self.info[k] for k in sorted(self.info)]

    def gateways(self) -> dict[tuple[str, str], list[str]]:
        """(site, gateway) -> the ids of its devices (speakers included)."""
        found: dict[tuple[str, str], list[str]] = {}
        for info in self.device_infos():
            found.setdefault((info.site, info.gateway), []).append(info.id)
        return found


def _unit_ids(spec: UnitSpec) -> list[str]:
    if spec.id is not None:
        return [spec.id]
    low, high = spec.floors
    return [
        f"{floor}{n:02d}" for floor in range(low, high + 1) for n in range(1, spec.per_floor + 1)
    ]


def _routine(spec: ResidentSpec, resident_id: str) -> Routine:
    return Routine(resident_id, spec.wake_h, spec.sleep_h, spec.elderly, spec.works)


class _Builder:
    def __init__(self, community: Community) -> None:
        self.c = community
        self.scenario = community.scenario

    def fail(self, problem: str) -> ScenarioError:
        return ScenarioError(self.scenario.name, None, "", problem)

    def add(
        self,
        spec: DeviceSpec,
        *,
        site: str,
        gateway: str,
        building: str,
        unit: Unit | None,
        default_id: str,
        resident: str | None,
    ) -> None:
        device_id = spec.id or default_id
        if device_id in self.c.info:
            raise self.fail(f"device id {device_id!r} is used twice; give one an 'id'")
        interval = spec.interval_s
        if spec.kind == "speaker":
            self.c.speakers.append(Speaker(device_id, building, failing=spec.failing))
        else:
            common: Common = {
                "household": unit.household if unit else None,
                "room": spec.room,
                "resident": resident,
                "interval_s": interval,
                "jitter": spec.jitter,
                "utc_offset_h": self.scenario.utc_offset_h,
            }
            device: SimDevice
            if spec.kind == "gas":
                device = GasDetector(device_id, self.c.seed, gas=spec.gas, **common)
            elif spec.kind == "locker":
                device = LockerBank(
                    device_id, self.c.seed, doors=spec.doors, chilled=spec.chilled, **common
                )
            else:
                device = FAMILIES[spec.kind](device_id, self.c.seed, **common)
            interval = device.interval_s
            self.c.devices.append(device)
            self.c.by_id[device_id] = device
            if unit is not None:
                unit.devices.append(device)
        self.c.info[device_id] = DeviceInfo(
            id=device_id,
            kind=spec.kind,
            site=site,
            gateway=gateway,
            building=building,
            unit=unit.id if unit else None,
            room=spec.room,
            resident=resident,
            interval_s=interval or 60.0,
        )

    def build(self) -> None:
        scenario = self.scenario
        for site in scenario.sites:
            for building in site.buildings:
                gateway = building.gateway or f"gw-{building.id}"
                for unit_spec in building.units:
                    self.units(site.id, gateway, building.id, unit_spec)
                self.devices(
                    building.devices, site.id, gateway, building.id, None, f"{building.id}", {}
                )

    def units(self, site: str, gateway: str, building: str, spec: UnitSpec) -> None:
        template = None
        if spec.template is not None:
            template = self.scenario.templates.get(spec.template)
            if template is None:
                raise self.fail(f"no template {spec.template!r}")
        for unit_id in _unit_ids(spec):
            key = f"{building}/{unit_id}"
            if key in self.c.units:
                raise self.fail(f"unit {key!r} is defined twice")
            names: dict[str, str] = {}
            routines: list[Routine] = []
            for r in template.residents if template else []:
                names[r.id] = f"{r.id}-{building}-{unit_id}"
                routines.append(_routine(r, names[r.id]))
            for r in spec.residents:
                names[r.id] = r.id
                routines.append(_routine(r, r.id))
            cooks = spec.cooks if spec.cooks is not None else (template.cooks if template else True)
            household = Household(key, self.c.seed, routines, scenario_offset(self.scenario), cooks)
            unit = Unit(site, gateway, building, unit_id, household)
            self.c.units[key] = unit
            for routine in routines:
                if routine.resident in self.c.residents:
                    raise self.fail(f"resident id {routine.resident!r} is used twice")
                self.c.residents[routine.resident] = Resident(routine.resident, unit, routine)
            specs = [*(template.devices if template else []), *spec.devices]
            self.devices(specs, site, gateway, building, unit, f"{building}-{unit_id}", names)

    def devices(
        self,
        specs: list[DeviceSpec],
        site: str,
        gateway: str,
        building: str,
        unit: Unit | None,
        suffix: str,
        names: dict[str, str],
    ) -> None:
        counts: dict[str, int] = {}
        for spec in specs:
            counts[spec.kind] = counts.get(spec.kind, 0) + 1
        seen: dict[str, int] = {}
        for spec in specs:
            seen[spec.kind] = seen.get(spec.kind, 0) + 1
            default = f"{spec.kind}-{suffix}"
            if counts[spec.kind] > 1:
                default += f"-{spec.room}" if spec.room else f"-{seen[spec.kind]}"
            resident = names.get(spec.resident, spec.resident) if spec.resident else None
            if resident is not None and resident not in self.c.residents:
                raise self.fail(
                    f"device {spec.id or default!r} names unknown resident {resident!r}"
                )
            self.add(
                spec,
                site=site,
                gateway=gateway,
                building=building,
                unit=unit,
                default_id=default,
                resident=resident,
            )


def scenario_offset(scenario: Scenario) -> float:
    return scenario.utc_offset_h


def build(
    scenario: Scenario,
    *,
    seed: int | None = None,
    start: datetime | None = None,
    duration_s: float | None = None,
) -> Community:
    """Build the community, apply its incidents and faults; ``start``/``seed`` override the
    scenario's (the MQTT runner starts at the wall clock)."""
    begin = start or scenario.start
    length = duration_s if duration_s is not None else seconds(scenario.duration)
    if length <= 0:
        raise ScenarioError(scenario.name, None, "duration", "the duration must be positive")
    community = Community(
        scenario=scenario,
        seed=scenario.seed if seed is None else seed,
        start=begin,
        end=begin + timedelta(seconds=length),
    )
    _Builder(community).build()
    for index, incident in enumerate(scenario.incidents):
        if seconds(incident.at) >= length:
            continue  # after the end of a shortened run
        community.incidents.append(incident_mod.apply(incident, community, index))
    rng = random.Random(f"{community.seed}:faults")
    for fault in scenario.faults:
        if seconds(fault.at) >= length:
            continue
        community.faults.extend(fault_mod.apply(fault, community, rng))
    return community
