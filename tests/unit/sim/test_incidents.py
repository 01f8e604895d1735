"""Each incident kind produces its signature in the readings, and its ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import wire
from firmware_sim.community import Community
from firmware_sim.incidents import cohb_crossing_s
from tests.unit.sim.helpers import readings, small

TIMELINE = """\
incidents:
  - {kind: gas_leak, at: 2m, unit: b1/101, speed: fast, duration: 3m}
  - {kind: gas_leak, at: 2m, unit: b1/102, speed: slow, peak_lel: 30, duration: 40m}
  - {kind: co, at: 5m, unit: b1/103, ppm: 400, ramp: 3m, duration: 40m}
  - {kind: kitchen_fire, at: 10m, unit: b1/201}
  - {kind: electrical_fault, at: 5m, device: electrical-b1}
  - {kind: flood, at: 5m, device: flood-b1}
  - {kind: fall, at: 20m, resident: e-b1-202}
  - {kind: sos, at: 25m, resident: e-b1-203}
  - {kind: missed_routine, at: 30m, resident: e-b1-101, duration: 30m, latest_after: 25m}
  - {kind: night_wandering, at: 1m, resident: e-b1-203}
  - {kind: locker_forced, at: 8m, device: locker-b1, door: 2}
  - {kind: pin_brute_force, at: 30m, device: locker-b1}
  - {kind: chilled_warming, at: 5m, device: locker-b1, door: 1, duration: 40m}
  - {kind: pump_cavitation, at: 20m, device: pump-b1}
  - {kind: cooking, at: 40m, unit: b1/202}
"""


World = tuple[Community, list[wire.Reading]]


@pytest.fixture(scope="module")
def world() -> World:
    c = small(TIMELINE)
    return c, readings(c)


def values(
    world: World,
    device: str,
    name: str,
    start_min: float = 0,
    end_min: float = 60,
) -> list[tuple[datetime, float]]:
    c, all_readings = world
    low = c.start + timedelta(minutes=start_min)
    high = c.start + timedelta(minutes=end_min)
    return [
        (r.ts, r.values[name])
        for r in all_readings
        if r.device == device and low <= r.ts < high and name in r.values
    ]


def peak(series: list[tuple[datetime, float]]) -> float:
    return max(v for _, v in series)


def first_at(series: list[tuple[datetime, float]], level: float) -> datetime:
    return next(ts for ts, v in series if v >= level)


def truth(world: World, kind: str) -> list[wire.replay.Incident]:
    return [i for i in world[0].ground_truth().incidents if i.kind == kind]


def test_fast_gas_leak_rises_in_seconds_reports_fast_and_airs_out(world: World) -> None:
    c, _ = world
    gas = values(world, "gas-b1-101", "gas_lel")
    assert peak(values(world, "gas-b1-101", "gas_lel", 0, 2)) < 3
    assert peak(gas) > 35
    crossed = first_at(gas, 25)
    assert crossed - (c.start + timedelta(minutes=2)) < timedelta(seconds=30)
    # Report on change: every couple of seconds while high, not once a minute.
    during = values(world, "gas-b1-101", "gas_lel", 3, 5)
    assert len(during) > 40
    assert peak(values(world, "gas-b1-101", "gas_lel", 10, 60)) < 3
    (fast,) = [i for i in truth(world, "gas_leak") if i.unit == "101"]
    kinds = {(e.kind, e.severity) for e in fast.expect}
    assert kinds == {("gas", wire.Severity.SEVERE), ("gas", wire.Severity.EXTREME)}
    assert all(e.latest >= crossed for e in fast.expect)
    assert fast.life_safety


def test_slow_gas_leak_takes_minutes(world: World) -> None:
    c, _ = world
    gas = values(world, "gas-b1-102", "gas_lel")
    ten = first_at(gas, 10)
    assert timedelta(minutes=6) < ten - (c.start + timedelta(minutes=2)) < timedelta(minutes=10)
    assert 27 < peak(gas) < 32


def test_co_from_a_blocked_flue_ramps_and_fluctuates(world: World) -> None:
    co = values(world, "co-b1-103", "co_ppm", 10, 40)
    levels = [v for _, v in co]
    assert 300 < sum(levels) / len(levels) < 500
    assert max(levels) - min(levels) > 80  # fluctuating, not a constant
    assert peak(values(world, "co-b1-103", "co_ppm", 0, 5)) < 30
    (incident,) = truth(world, "co")
    (expected,) = incident.expect
    # UL 2034 at 400 ppm: by 15 min; the ramp adds a little.
    latest = (expected.latest - incident.start).total_seconds() / 60
    assert 14 < latest < 22


def test_kitchen_fire_smoke_first_then_heat(world: World) -> None:
    smoke = values(world, "smoke-b1-201", "smoke_obs", 10, 25)
    heat = values(world, "heat-b1-201", "temp_c", 10, 25)
    smoke_at = first_at(smoke, 3.0)
    heat_at = first_at(heat, 40.0)
    assert smoke_at < heat_at
    assert peak(heat) > 60
    assert peak(values(world, "co-b1-201", "co_ppm", 10, 25)) > 100
    (incident,) = truth(world, "kitchen_fire")
    assert {e.kind for e in incident.expect} == {"smoke", "heat", "fire"}
    fire = next(e for e in incident.expect if e.kind == "fire")
    assert (fire.scope, fire.unit, fire.severity) == ("unit", "201", wire.Severity.EXTREME)


def test_electrical_fault_raises_residual_current_and_cable_temperature(world: World) -> None:
    assert peak(values(world, "electrical-b1", "residual_ma", 0, 5)) < 60
    assert peak(values(world, "electrical-b1", "residual_ma", 9, 25)) > 450
    assert peak(values(world, "electrical-b1", "cable_temp_c", 9, 25)) > 80


def test_garage_flood_rises(world: World) -> None:
    assert peak(values(world, "flood-b1", "water_level_cm", 0, 5)) < 0.5
    water = values(world, "flood-b1", "water_level_cm", 5, 40)
    assert peak(water) > 20
    assert first_at(water, 2.0) - water[0][0] < timedelta(minutes=4)


def test_elder_fall_sets_the_flag_at_once_and_motion_stops(world: World) -> None:
    c, _ = world
    fall = values(world, "wearable-b1-202", "fall", 19, 25)
    assert first_at(fall, 1.0) == c.start + timedelta(minutes=20)
    assert peak(values(world, "wearable-b1-202", "fall", 0, 19)) == 0
    motion = values(world, "pir-b1-202-kitchen", "motion", 20.5, 35)
    assert peak(motion) == 0
    (incident,) = truth(world, "fall")
    assert incident.expect[0].scope == "resident"


def test_sos_is_sent_the_moment_it_is_pressed(world: World) -> None:
    c, _ = world
    sos = values(world, "sos-b1-203", "sos")
    assert first_at(sos, 1.0) == c.start + timedelta(minutes=25)
    assert sum(v for _, v in sos) >= 1
    (incident,) = truth(world, "sos")
    assert incident.expect[0].latest - incident.start == timedelta(seconds=10)


def test_missed_morning_routine_stays_in_bed_without_motion(world: World) -> None:
    bed = values(world, "bed-b1-101", "bed_occupied", 30, 60)
    assert all(v == 1.0 for _, v in bed)
    for room in ("kitchen", "hallway"):
        assert peak(values(world, f"pir-b1-101-{room}", "motion", 30, 60)) == 0
    # Its neighbour with the same routine got up.
    assert values(world, "bed-b1-102", "bed_occupied", 55, 60)[-1][1] == 0.0
    (incident,) = truth(world, "missed_routine")
    assert not incident.life_safety
    (expect,) = incident.expect
    assert (expect.kind, expect.scope) == ("inactivity", "resident")
    # In the flat: its motion sensors and door name no resident, so no one device is expected.
    assert (expect.device, expect.building, expect.unit) == (None, "b1", "101")
    assert expect.latest - incident.start == timedelta(minutes=25)


def test_night_wandering_opens_the_front_door_at_night(world: World) -> None:
    c, _ = world
    door = values(world, "door-b1-203", "contact_open", 0, 25)
    assert first_at(door, 1.0) == c.start + timedelta(minutes=1)
    assert peak(values(world, "door-b1-203", "contact_open", 0, 1)) == 0
    assert peak(values(world, "pir-b1-203-hallway", "motion", 1, 5)) == 1
    assert all(v == 0 for _, v in values(world, "bed-b1-203", "bed_occupied", 1, 20))


def test_locker_forced_open_without_authorisation(world: World) -> None:
    c, all_readings = world
    at = c.start + timedelta(minutes=8)
    first = next(r for r in all_readings if r.device == "locker-b1" and r.ts >= at)
    assert first.ts == at
    assert first.values["door_2_open"] == 1
    assert (first.values["tamper"], first.values["unlock_authorised"]) == (1, 0)
    before = values(world, "locker-b1", "tamper", 0, 8)
    assert peak(before) == 0


def test_pin_brute_force_counts_failures(world: World) -> None:
    failures = values(world, "locker-b1", "pin_failures", 30, 35)
    assert sum(v for _, v in failures) >= 25  # 6 a minute for 5 minutes
    assert sum(v for _, v in values(world, "locker-b1", "pin_failures", 0, 5)) <= 3


def test_chilled_locker_warms_up(world: World) -> None:
    assert peak(values(world, "locker-b1", "door_1_temp_c", 0, 5)) < 8
    assert peak(values(world, "locker-b1", "door_1_temp_c", 35, 45)) > 13


def test_pump_cavitation_shakes_and_starves_the_pump(world: World) -> None:
    def mean(name: str, a: float, b: float) -> float:
        series = values(world, "pump-b1", name, a, b)
        return sum(v for _, v in series) / len(series)

    assert mean("vibration_mm_s", 30, 40) > 3 * mean("vibration_mm_s", 5, 15)
    assert mean("pressure_bar", 30, 40) < mean("pressure_bar", 5, 15) - 0.4
    assert mean("flow_m3h", 30, 40) < 0.85 * mean("flow_m3h", 5, 15)


def test_heavy_cooking_stays_below_alarms_and_forbids_them(world: World) -> None:
    co = values(world, "co-b1-202", "co_ppm", 40, 60)
    assert 15 < peak(co) < 35
    assert peak(values(world, "smoke-b1-202", "smoke_obs", 40, 60)) < 2
    (incident,) = truth(world, "cooking")
    assert incident.expect == []
    assert {f.kind for f in incident.forbid} == {"co", "smoke", "fire", "gas"}


def test_every_incident_kind_is_in_the_ground_truth(world: World) -> None:
    kinds = {i.kind for i in world[0].ground_truth().incidents}
    assert len(kinds) == 14
    for incident in world[0].ground_truth().incidents:
        assert incident.start <= incident.end
        for expected in incident.expect:
            assert expected.latest > incident.start


def test_cfk_matches_the_standards_figures() -> None:
    def minutes(ppm: float) -> float | None:
        found = cohb_crossing_s(lambda t: ppm, 6 * 3600)
        return None if found is None else found / 60

    for ppm, expected in ((400, 15), (150, 48), (70, 185)):
        found = minutes(ppm)
        assert found is not None
        assert found == pytest.approx(expected, rel=0.1)
    assert minutes(30) is None
