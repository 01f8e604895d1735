"""Every device family: determinism, registered metrics in range, daily cycles, battery."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime, timedelta

import pytest

import wire
from firmware_sim.families import FAMILIES, KINDS, CoAlarm, HeatDetector, SimDevice
from firmware_sim.household import Household, Routine
from tests.unit.sim.helpers import readings, small
from wire.metrics import metric

T0 = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)  # 08:00 in Beijing


def test_every_family_of_the_issue_is_modelled() -> None:
    assert set(KINDS) == {
        "gas", "co", "smoke", "heat", "electrical", "flood", "locker",
        "pir", "door", "bed", "wearable", "sos", "speaker", "pump",
    }  # fmt: skip


def test_same_seed_gives_same_readings() -> None:
    assert readings(small(seed=3)) == readings(small(seed=3))


def test_different_seed_gives_different_readings() -> None:
    assert readings(small(seed=3)) != readings(small(seed=4))


def test_every_metric_is_registered_and_in_range() -> None:
    seen: set[str] = set()
    for reading in readings(small()):
        for name, value in reading.values.items():
            registered = metric(name)
            assert registered is not None or name.startswith("door_"), name
            if registered:
                assert registered.low <= value <= registered.high, (name, value)
            seen.add(name)
    kinds = {k for k in FAMILIES}
    assert len(kinds) == 13
    assert {"gas_lel", "co_ppm", "smoke_obs", "temp_c", "residual_ma", "cable_temp_c"} <= seen
    assert {"water_level_cm", "motion", "contact_open", "bed_occupied", "heart_rate_bpm"} <= seen
    assert {"spo2_pct", "fall", "sos", "battery_pct", "vibration_mm_s", "pressure_bar"} <= seen
    assert {"flow_m3h", "motor_current_a", "tamper", "pin_failures", "power_ok"} <= seen
    assert {"door_1_open", "door_1_occupied", "door_1_temp_c", "parcel_age_h"} <= seen


def test_every_family_reports_through_the_codec() -> None:
    codec = wire.Codec()
    for reading in readings(small())[:500]:
        assert codec.decode_readings(codec.encode(reading), reading.ts) == [reading]


def _household(cooks: bool = True) -> Household:
    return Household("b/1", 1, [Routine("r", wake_h=6.0, elderly=True)], 8.0, cooks)


def _day(device: SimDevice, metric_name: str, step_min: int = 5) -> dict[int, list[float]]:
    """Values by local hour over a day."""
    by_hour: dict[int, list[float]] = {}
    for minute in range(0, 24 * 60, step_min):
        now = T0 - timedelta(hours=8) + timedelta(minutes=minute)  # local midnight onwards
        by_hour.setdefault(minute // 60, []).append(device.values(now)[metric_name])
    return by_hour


def test_cooking_nudges_co_and_heat_in_the_kitchen_but_not_to_an_alarm() -> None:
    co = CoAlarm("co-1", 1, household=_household(), room="kitchen")
    heat = HeatDetector("heat-1", 1, household=_household(), room="kitchen")
    co_day, heat_day = _day(co, "co_ppm"), _day(heat, "temp_c")
    night_co = statistics.mean(co_day[3])
    assert max(max(co_day[h]) for h in (11, 12, 17, 18)) > night_co + 4
    assert max(max(v) for v in co_day.values()) < 30  # UL 2034: no alarm at 30 ppm
    assert max(max(heat_day[h]) for h in (17, 18)) > statistics.mean(heat_day[3]) + 2
    # No cooking, no nudge.
    quiet = CoAlarm("co-1", 1, household=_household(cooks=False), room="kitchen")
    assert max(max(v) for v in _day(quiet, "co_ppm").values()) < 5


def test_routine_shows_in_motion_and_bed() -> None:
    c = small()
    night = [r for r in readings(c) if r.device == "bed-b1-101"]
    # 05:00-05:30 local the resident is asleep (wake 5.5 +- jitter), later up.
    assert night[0].values["bed_occupied"] == 1.0
    assert night[-1].values["bed_occupied"] == 0.0


def test_battery_drains_and_statuses_carry_it() -> None:
    c = small()
    sos = c.device("sos-b1-101")
    start = sos.battery(c.start)
    assert sos.battery(c.start + timedelta(days=365)) < start
    assert sos.status(c.start).battery_pct == pytest.approx(start, abs=0.1)
    wearable = c.device("wearable-b1-101")
    # Charged overnight, drains while worn.
    assert wearable.battery(T0 + timedelta(hours=10)) < wearable.battery(T0)


def test_intervals_have_jitter_within_bounds() -> None:
    c = small()
    stamps = [r.ts for r in readings(c) if r.device == "pump-b1"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert all(9.0 <= g <= 11.0 for g in gaps)
    assert len(set(gaps)) > 10
