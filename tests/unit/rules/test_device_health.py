"""Device health: silent, stuck, out of range, battery, clock skew. A stopped sensor must
never look like a safe reading."""

from __future__ import annotations

import math

import msgspec
import pytest

from rules import Engine, Rule, RuleSet, load_preset
from rules.detect.base import Protected
from rules.detect.zscore import RobustZ
from tests.unit.rules.support import Sim, at, device

HEAT = device("heat-1", "heat", interval_s=60)
SPEAKER = device("spk-1", "speaker")


def test_a_device_that_stops_is_reported_silent_and_clears_when_back() -> None:
    sim = Sim("device-health")
    sim.run(HEAT, lambda t: {"temp_c": 21 + math.sin(t / 600)}, 0, 600, 60)
    for t in range(610, 1200, 10):
        sim.tick(t)
    sim.feed(1200, HEAT, temp_c=21.5)
    assert [c for c in sim.changes() if c[1] == "device-silent"] == [
        (780, "device-silent", "raised", "Moderate"),
        (1200, "device-silent", "cleared", "Moderate"),
    ]


def test_a_device_that_never_reports_is_silent_but_speakers_are_not_watched() -> None:
    sim = Sim("device-health")
    sim.engine.add_devices([HEAT, SPEAKER], at(0))
    for t in range(0, 400, 10):
        sim.tick(t)
    assert [(c[1], x.device) for c, (_, x) in zip(sim.changes(), sim.log, strict=True)] == [
        ("device-silent", "heat-1")
    ]


def test_a_stopped_co_sensor_keeps_its_alarm_and_is_reported() -> None:
    """CO alarm raised, then the sensor dies: the alarm does not clear, and silence is raised."""
    co = device("co-1", "co", interval_s=30)
    sim = Sim([*load_preset("co-ul2034").resolved(), *load_preset("device-health").resolved()])
    sim.run(co, lambda t: {"co_ppm": 400.0}, 0, 1200, 30)
    for t in range(1210, 4 * 3600, 60):
        sim.tick(t)
    phases = [(c[1], c[2]) for c in sim.changes()]
    assert ("co", "cleared") not in phases
    assert ("device-silent", "raised") in phases


def test_a_flatlined_temperature_is_stuck() -> None:
    sim = Sim("device-health")
    sim.run(
        HEAT,
        lambda t: {"temp_c": 21 + 0.1 * math.sin(t / 300) if t < 3600 else 21.0},
        0,
        12 * 3600,
        60,
    )
    stuck = [c for c in sim.changes() if c[1] == "device-stuck"]
    assert (
        stuck
        and stuck[0][2] == "raised"
        and 3600 + 6 * 3600 <= stuck[0][0] <= 3600 + 6 * 3600 + 120
    )


def test_a_live_sensor_is_not_stuck() -> None:
    sim = Sim("device-health")
    sim.run(HEAT, lambda t: {"temp_c": 21 + 0.1 * math.sin(t / 300)}, 0, 12 * 3600, 60)
    assert sim.log == []


@pytest.mark.parametrize("split_range", [False, True])
def test_out_of_range_is_a_fault_and_clears_after_good_readings(split_range: bool) -> None:
    """Fed as it came, or split off as the edge's ingest does: one fault, the same times."""
    sim = Sim("device-health", split_range=split_range)
    sim.run(
        HEAT, lambda t: {"temp_c": 400.0 if 600 <= t < 900 else 21 + math.sin(t / 500)}, 0, 3000, 60
    )
    assert [c for c in sim.changes() if c[1] == "device-out-of-range"] == [
        (600, "device-out-of-range", "raised", "Moderate"),
        (1500, "device-out-of-range", "cleared", "Moderate"),
    ]


def test_a_faulted_channel_keeps_its_last_good_value_and_its_alarm() -> None:
    """A gas sensor that turns to reading -5 %LEL during a leak: its channel is faulted, and
    the gas alarm stands on the last good value (taken as a reading, -5 would have cleared
    it). The fault outlives readings without that channel and a restart, and ends with a
    good value."""
    gas = device("gas-1", "gas", interval_s=30)
    rules = RuleSet(include=["gas", "device-health"])
    sim = Sim(rules, split_range=True)
    for t in range(0, 60, 10):
        sim.feed(t, gas, gas_lel=40.0, battery_pct=90.0)
    assert [c[1:3] for c in sim.changes()] == [("gas-lel", "raised")]
    for t in range(60, 300, 10):
        sim.feed(t, gas, gas_lel=-5.0, battery_pct=90.0)
    assert [c[1:3] for c in sim.changes()] == [
        ("gas-lel", "raised"),
        ("device-out-of-range", "raised"),
    ]
    track = sim.engine.state.devices["gas-1"]
    assert track.metrics["gas_lel"].last == 40.0 and track.faulted == {"gas_lel": -5.0}
    [fault] = sim.raised("device-out-of-range")
    assert fault.evidence == {"gas_lel": -5.0} and fault.at == at(60)
    sim.engine = Engine.restore(rules, sim.engine.snapshot(), utc_offset_s=8 * 3600)
    for t in range(300, 1200, 30):  # the battery alone: the fault stands
        sim.feed(t, gas, battery_pct=90.0)
    assert sim.engine.state.devices["gas-1"].faulted == {"gas_lel": -5.0}
    assert len(sim.log) == 2
    for t in range(1200, 2100, 30):
        sim.feed(t, gas, gas_lel=0.5, battery_pct=90.0)
    assert [c[1:3] for c in sim.changes()][2:] == [
        ("gas-lel", "cleared"),
        ("device-out-of-range", "cleared"),
    ]


def test_battery_low_then_very_low_with_hysteresis_on_clear() -> None:
    sim = Sim("device-health")
    levels = [20, 14, 10, 4, 20, 35]
    for i, battery in enumerate(levels):
        sim.feed(i * 60, HEAT, temp_c=21 + i * 0.1, battery_pct=battery)
    assert [(c[2], c[3]) for c in sim.changes()] == [
        ("raised", "Minor"),
        ("updated", "Moderate"),
        ("cleared", "Moderate"),
    ]
    assert sim.changes()[-1][0] == 300  # not at 20 %: only above 30 %


def test_clock_skew() -> None:
    sim = Sim("device-health")
    sim.feed(0, HEAT, temp_c=21.0)
    sim.feed(60, HEAT, skew_s=-600, temp_c=21.1)
    for t in range(120, 1000, 60):
        sim.feed(t, HEAT, temp_c=21 + t / 1000)
    assert [c for c in sim.changes() if c[1] == "device-clock-skew"] == [
        (60, "device-clock-skew", "raised", "Minor"),
        (720, "device-clock-skew", "cleared", "Minor"),
    ]


def test_a_removed_device_clears_its_alarms_and_is_never_silent_again() -> None:
    """A sensor taken out of the config while silent: its alarm clears ("device removed")
    rather than standing for ever; the other sensor's alarm is its own, and stays."""
    sim = Sim("device-health")
    other = device("heat-2", "heat", interval_s=60)
    sim.engine.add_devices([HEAT, other], at(0))
    for t in range(0, 400, 10):
        sim.tick(t)
    assert {x.device for x in sim.raised("device-silent")} == {"heat-1", "heat-2"}
    removed = sim.engine.forget_devices({"heat-2"}, at(400))
    assert [(x.rule, x.device, x.phase.value, x.message) for x in removed] == [
        (
            "device-silent",
            "heat-1",
            "cleared",
            "device_silent alert cleared: device removed or moved",
        )
    ]
    assert (removed[0].unit, removed[0].building) == (HEAT.unit, HEAT.building)  # where it was
    assert "heat-1" not in sim.engine.state.devices
    for t in range(400, 2000, 10):
        sim.tick(t)
    assert [x.device for x in sim.raised("device-silent")] == ["heat-1", "heat-2"]  # no new one
    assert sim.engine.forget_devices({"heat-2"}, at(2000)) == []
    # The other sensor still clears when it reports: its track was kept.
    sim.feed(2000, other, temp_c=21.0)
    assert sim.changes()[-1][1:3] == ("device-silent", "cleared")


def test_a_fire_alarm_latched_by_a_removed_smoke_detector_clears() -> None:
    """fire-confirmed latches smoke for 5 min; its smoke detector is taken away a minute
    after its last smoke: a latch it set must not hold the flat's alarm, whose clear needs a
    smoke reading that can never come now."""
    sim = Sim("smoke")
    smoke, heat = device("smoke-1", "smoke"), device("heat-1", "heat")
    sim.engine.add_devices([smoke, heat], at(0))
    for t in range(0, 40, 5):
        sim.feed(t, smoke, smoke_obs=5.0)
        sim.feed(t, heat, temp_c=60.0)
    assert ("fire-confirmed", "raised") in [(c[1], c[2]) for c in sim.changes()]
    cleared = sim.engine.forget_devices({"heat-1"}, at(60))
    assert ("fire-confirmed", "b1/101") in [(x.rule, x.key) for x in cleared]
    for t in range(60, 4 * 3600, 60):
        sim.feed(t, heat, temp_c=21.0)
    assert sim.engine.active() == []


def test_an_inactivity_alarm_whose_sensor_is_removed_or_moved_clears() -> None:
    """The resident's motion sensor is taken out, or moved to another resident; their bed mat
    stays. Nothing left can see the activity the routine watched: the routine is dropped, and
    the alarm clears at the next tick instead of standing for ever."""
    pir, bed = device("pir-1", "pir", resident="r1"), device("bed-1", "bed", resident="r1")
    for change in ("removed", "moved"):
        sim = Sim("elder-care")
        sim.engine.add_devices([pir, bed], at(0))
        sim.feed(0, pir, motion=1)
        sim.feed(10, bed, bed_occupied=1)
        for h in range(1, 30):
            sim.tick(h * 3600)
        assert [x.rule for x in sim.raised()] == ["inactivity"], change
        keep = {"bed-1"}
        if change == "moved":
            sim.engine.add_devices([device("pir-1", "pir", resident="r2")], at(30 * 3600))
            keep.add("pir-1")
        assert sim.engine.forget_devices(keep, at(30 * 3600)) == []
        assert not any(n.startswith("r1|") for n in sim.engine.state.routines), change
        sim.tick(30 * 3600 + 1)
        assert sim.changes()[-1][1:3] == ("inactivity", "cleared"), change
        for h in range(31, 31 + 24 * 30, 24):
            sim.tick(h * 3600)
        assert [a for a in sim.engine.active() if a[1] == "r1"] == [], change


def test_a_swapped_sensor_keeps_the_routine_it_will_see() -> None:
    """pir-1 is replaced by pir-2 in one config edit: pir-2 has not reported yet, and the
    resident's learned routine must not be dropped for it."""
    sim = Sim("elder-care")
    pir, bed = device("pir-1", "pir", resident="r1"), device("bed-1", "bed", resident="r1")
    sim.engine.add_devices([pir, bed], at(0))
    sim.feed(0, pir, motion=1)
    sim.feed(10, bed, bed_occupied=1)
    learned = set(sim.engine.state.routines)
    assert any(n.startswith("r1|") for n in learned)
    sim.engine.add_devices([device("pir-2", "pir", resident="r1")], at(20))
    assert sim.engine.forget_devices({"pir-2", "bed-1"}, at(20)) == []
    assert set(sim.engine.state.routines) == learned


def test_a_rule_edited_out_of_a_scope_across_a_restart_settles_its_alarm() -> None:
    """fire-confirmed is edited to watch heat and CO only, and the gateway restarts: the
    restored engine has no memory of the smoke detector having been in the flat's scope, yet
    the alarm (whose clear reads smoke) is settled as it would be on a hot reload."""
    base = list(load_preset("smoke").rules)
    [fire] = [r for r in base if r.id == "fire-confirmed"]
    kinds = msgspec.structs.replace(fire.devices, kinds=["heat", "co"])
    edited = [msgspec.structs.replace(fire, devices=kinds) if r is fire else r for r in base]
    smoke, heat = device("smoke-1", "smoke"), device("heat-1", "heat")
    sim = Sim(base)
    sim.engine.add_devices([smoke, heat], at(0))
    sim.feed(0, heat, temp_c=20)
    sim.feed(30, heat, temp_c=60)
    for t in range(31, 120, 5):
        sim.feed(t, smoke, smoke_obs=5)
    assert ("fire-confirmed", "b1/101", "Extreme") in sim.engine.active()
    again = Engine.restore(edited, sim.engine.snapshot(), utc_offset_s=8 * 3600)
    again.add_devices([smoke, heat], at(200))
    cleared = again.forget_devices({"smoke-1", "heat-1"}, at(200))
    assert [(x.rule, x.key) for x in cleared] == [("fire-confirmed", "b1/101")]
    # An unchanged restart settles nothing.
    same = Engine.restore(base, sim.engine.snapshot(), utc_offset_s=8 * 3600)
    same.add_devices([smoke, heat], at(200))
    assert same.forget_devices({"smoke-1", "heat-1"}, at(200)) == []


def test_inactivity_needs_a_sensor_for_it_even_with_a_routine_learned() -> None:
    """The motion sensor goes and a wearable comes in the same edit: the routine is kept for
    the device that has not reported yet, but a wearable sees no motion, so the resident is
    not 'inactive' for ever."""
    sim = Sim("elder-care")
    pir, bed = device("pir-1", "pir", resident="r1"), device("bed-1", "bed", resident="r1")
    sim.engine.add_devices([pir, bed], at(0))
    sim.feed(0, pir, motion=1)
    sim.feed(10, bed, bed_occupied=1)
    for h in range(1, 30):
        sim.tick(h * 3600)
    assert [x.rule for x in sim.raised()] == ["inactivity"]
    band = device("band-1", "wearable", resident="r1")
    sim.engine.add_devices([band], at(30 * 3600))
    sim.engine.forget_devices({"bed-1", "band-1"}, at(30 * 3600))
    sim.feed(30 * 3600 + 5, band, heart_rate_bpm=70)
    for h in range(31, 31 + 24 * 5, 24):
        sim.tick(h * 3600)
    assert [a for a in sim.engine.active() if a[0] == "inactivity"] == []


def _rule(leaf: dict[str, object], kind: str = "x") -> Rule:
    return msgspec.convert(
        {
            "id": "r",
            "kind": kind,
            "create": {"Moderate": {"all": [leaf]}},
            "actions": [{"do": "notify", "to": ["installer"]}],
            "message": "m",
        },
        Rule,
    )


def test_a_reading_with_a_faulted_channel_does_not_teach_a_detector() -> None:
    """A detector fixes its channels from the first reading it learns: one with every value
    split off left it with none, blind to the pump for good (its model is saved)."""
    pump = device("pump-1", "pump", interval_s=10)
    sim = Sim([_rule({"score": "robust_z", "op": ">=", "value": 0.5})], split_range=True)
    sim.feed(0, pump, vibration_mm_s=-3.0, pressure_bar=-7.0)  # every value out of range
    t = 10
    for i in range(1500):
        sim.feed(t, pump, vibration_mm_s=2 + 0.1 * math.sin(i / 7), pressure_bar=3.0)
        t += 10
    for _ in range(5):
        sim.feed(t, pump, vibration_mm_s=60.0, pressure_bar=30.0)
        t += 10
    detector = sim.engine._detectors[("pump-1", "robust_z")]
    assert isinstance(detector, Protected) and isinstance(detector.model, RobustZ)
    assert detector.model.channels.names == ("pressure_bar", "vibration_mm_s")
    assert [x.rule for _, x in sim.log] == ["r"]


def test_out_of_range_with_a_door_pattern_fires_on_a_faulted_door() -> None:
    """The leaf matched a faulted channel by name alone: ``door_*_open`` never fired."""
    lock = device("lock-1", "locker")
    for split in (True, False):
        sim = Sim([_rule({"out_of_range": "door_*_open"})], split_range=split)
        sim.feed(0, lock, door_3_open=0.0)
        sim.feed(60, lock, door_3_open=7.0)
        assert [x.rule for _, x in sim.log] == ["r"]
        assert sim.log[0][1].evidence == {"door_3_open": 7.0}
