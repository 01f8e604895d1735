"""Smoke with hold, fire confirmation in a unit, electrical fire and flood: create and clear."""

from __future__ import annotations

from tests.unit.rules.support import Sim, device

SMOKE = device("smoke-101", "smoke", room="kitchen")
HEAT = device("heat-101", "heat", room="kitchen")
CO = device("co-101", "co", room="living")
SMOKE_OTHER_UNIT = device("smoke-102", "smoke", unit="102")
HEAT_OTHER_UNIT = device("heat-102", "heat", unit="102")


def test_smoke_alarms_after_its_hold_and_clears() -> None:
    sim = Sim("smoke")
    sim.run(SMOKE, lambda t: {"smoke_obs": 5.0 if 60 <= t < 300 else 0.2}, 0, 600, 5, 1)
    assert [(c[1], c[2]) for c in sim.changes()] == [("smoke", "raised"), ("smoke", "cleared")]
    assert sim.first() == 70


def test_a_smoke_puff_does_not_alarm() -> None:
    sim = Sim("smoke")
    sim.run(SMOKE, lambda t: {"smoke_obs": 5.0 if 60 <= t < 65 else 0.2}, 0, 600, 5, 1)
    assert sim.log == []


def test_smoke_plus_heat_rise_in_the_unit_confirms_a_fire() -> None:
    sim = Sim("smoke")
    for t in range(0, 600, 5):
        sim.feed(t, SMOKE, smoke_obs=4.0 if t >= 120 else 0.1)
        sim.feed(t, HEAT, temp_c=25.0 + max(0, t - 200) * 5 / 60)  # +5 K/min from t=200
    fire = sim.raised("fire-confirmed")
    assert len(fire) == 1
    assert fire[0].severity.value == "Extreme" and fire[0].key == "b1/101"
    assert {a.do for a in fire[0].actions} >= {"broadcast", "speaker", "siren"}
    assert sim.first(rule="fire-confirmed") is not None
    assert 200 < (sim.first(rule="fire-confirmed") or 0) <= 200 + 120


def test_smoke_then_co_rise_confirms_and_clears_when_smoke_is_gone() -> None:
    sim = Sim("smoke")
    for t in range(0, 3600, 10):
        smoke = 4.0 if 100 <= t < 900 else 0.1
        sim.feed(t, SMOKE, smoke_obs=smoke)
        sim.feed(t, CO, co_ppm=min(200.0, max(0.0, (t - 300) * 0.5)))  # +30 ppm/min from t=300
    assert sim.first(rule="fire-confirmed") is not None
    assert [c[2] for c in sim.changes() if c[1] == "fire-confirmed"] == ["raised", "cleared"]


def test_smoke_and_heat_in_different_units_are_not_a_fire() -> None:
    sim = Sim("smoke")
    for t in range(0, 600, 5):
        sim.feed(t, SMOKE, smoke_obs=4.0)
        sim.feed(t, HEAT_OTHER_UNIT, temp_c=25.0 + t * 5 / 60)
    assert sim.raised("fire-confirmed") == []


def test_cooking_steam_with_no_smoke_is_not_a_fire() -> None:
    sim = Sim("smoke")
    for t in range(0, 1200, 10):
        sim.feed(t, SMOKE, smoke_obs=0.8)
        sim.feed(t, HEAT, temp_c=25.0 + min(t, 600) * 2 / 60)  # to 45 °C at 2 K/min
    assert sim.log == []


ELEC = device("elec-1", "electrical")


def test_electrical_levels_and_clear() -> None:
    sim = Sim("electrical")

    def load(t: float) -> dict[str, float]:
        residual = 150.0 if t < 600 else 400.0 if t < 900 else 10.0
        cable = 40.0 if t < 700 else 95.0 if t < 900 else 35.0
        return {"residual_ma": residual, "cable_temp_c": cable}

    sim.run(ELEC, load, 0, 2400, 10)
    assert [(c[2], c[3]) for c in sim.changes()] == [
        ("raised", "Moderate"),
        ("updated", "Severe"),
        ("updated", "Extreme"),
        ("cleared", "Extreme"),
    ]
    times = [t for t, *_ in sim.changes()]
    assert times[0] == 300 and times[3] == 900 + 300


def test_normal_leakage_does_not_alarm() -> None:
    sim = Sim("electrical")
    sim.run(ELEC, lambda t: {"residual_ma": 25.0, "cable_temp_c": 45.0}, 0, 7200, 60)
    assert sim.log == []


FLOOD = device("flood-1", "flood", room="basement")


def test_flood_escalates_and_clears() -> None:
    sim = Sim("flood")

    def water(t: float) -> dict[str, float]:
        return {"water_level_cm": min(t / 20, 40.0) if t < 1200 else 0.0}

    sim.run(FLOOD, water, 0, 2400, 10)
    assert [(c[2], c[3]) for c in sim.changes()] == [
        ("raised", "Severe"),
        ("updated", "Extreme"),
        ("cleared", "Extreme"),
    ]


def test_flood_severe_within_60_s_of_2_cm() -> None:
    sim = Sim("flood")
    sim.run(FLOOD, lambda t: {"water_level_cm": t / 60}, 0, 600, 10)  # 1 cm/min
    assert sim.changes()[0][1:] == ("flood", "raised", "Severe")
    assert 120 < sim.changes()[0][0] <= 180


PUMP = device("pump-1", "pump", unit=None, room="pump-room")


def test_pump_vibration_mean_above_the_iso_10816_limit_and_back() -> None:
    sim = Sim("pump")

    def vibration(t: float) -> dict[str, float]:
        wobble = 0.3 * ((t // 60) % 2)
        return {"vibration_mm_s": (7.0 if 1800 <= t < 3600 else 1.8) + wobble}

    sim.run(PUMP, vibration, 0, 7200, 60)
    assert [(c[2], c[3]) for c in sim.changes()] == [
        ("raised", "Moderate"),
        ("cleared", "Moderate"),
    ]
    assert 1800 < sim.changes()[0][0] <= 1800 + 300


def test_a_splash_does_not_flood() -> None:
    sim = Sim("flood")
    sim.run(FLOOD, lambda t: {"water_level_cm": 2.0 if 100 <= t < 120 else 0.0}, 0, 600, 10)
    assert sim.log == []
