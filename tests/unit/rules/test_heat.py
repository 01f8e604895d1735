"""Heat, EN 54-5 class A1R: every row of STANDARDS.md's rate-of-rise table, both bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.rules.support import Sim, device
from wire import Phase

STANDARDS = Path(__file__).resolve().parents[4] / "shared" / "STANDARDS.md"
# rate of rise (K/min), not before (s), by (s), from STANDARDS.md
ROWS = [
    (1, 29 * 60, 40 * 60 + 20),
    (3, 7 * 60 + 13, 13 * 60 + 40),
    (5, 4 * 60 + 9, 8 * 60 + 20),
    (10, 60, 4 * 60 + 20),
    (20, 30, 2 * 60 + 20),
    (30, 20, 60 + 40),
]
HEAT = device("heat-1", "heat", room="kitchen")


def test_rows_are_the_standards_table() -> None:
    if not STANDARDS.is_file():
        pytest.skip("STANDARDS.md is not beside the project")
    text = STANDARDS.read_text(encoding="utf-8")
    found = re.findall(r"^\| (\d+) \| (\d+):(\d\d) \| (\d+):(\d\d) \|", text, re.M)
    assert [(int(r), int(a) * 60 + int(b), int(c) * 60 + int(d)) for r, a, b, c, d in found] == ROWS


def alarm_time(rate: float, every: float) -> float | None:
    """25 °C for 10 min, then rising at ``rate`` K/min from t=0 (to 150 °C); first alarm."""
    sim = Sim("heat-a1r")

    def temp(t: float) -> dict[str, float]:
        return {"temp_c": min(150.0, 25.0 + max(0.0, t) * rate / 60)}

    sim.run(HEAT, temp, -600, 45 * 60, every, 1)
    return sim.first(Phase.RAISED)


@pytest.mark.parametrize("every", [1.0, 5.0, 10.0], ids=["1s", "5s", "10s"])
@pytest.mark.parametrize(("rate", "not_before", "by"), ROWS, ids=[f"{r[0]}Kmin" for r in ROWS])
def test_rate_of_rise_rows(rate: float, not_before: float, by: float, every: float) -> None:
    alarm = alarm_time(rate, every)
    assert alarm is not None
    assert not_before <= alarm <= by, f"{rate} K/min alarmed at {alarm:.0f} s"


def test_static_element_between_54_and_65() -> None:
    """A very slow rise (0.2 K/min) alarms on the static element, inside 54-65 °C."""
    sim = Sim("heat-a1r")
    sim.run(HEAT, lambda t: {"temp_c": 25.0 + t * 0.2 / 60}, 0, 4 * 3600, 30, 10)
    raised = sim.raised()
    assert len(raised) == 1
    assert 54 <= raised[0].evidence["temp_c"] <= 65


def test_a_hot_room_does_not_alarm_and_a_fire_clears_when_cool() -> None:
    sim = Sim("heat-a1r")  # a summer kitchen at 40-45 °C, slowly swinging
    sim.run(HEAT, lambda t: {"temp_c": 40 + 5 * (t % 3600) / 3600}, 0, 6 * 3600, 60, 60)
    assert sim.log == []
    fire = Sim("heat-a1r")
    fire.run(
        HEAT, lambda t: {"temp_c": 25 + t / 6 if t < 300 else 30.0}, 0, 1200, 5, 1
    )  # 10 K/min for 5 min, then cooled
    assert [c[2] for c in fire.changes()] == ["raised", "cleared"]
