"""Carbon monoxide: the dose model against every row of STANDARDS.md's CO table, both bounds,
and its behaviour on ramps, steps and fluctuating levels."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from rules.co_dose import advance, equilibrium, minutes_to
from tests.unit.rules.support import Sim, device
from wire import Phase

STANDARDS = Path(__file__).resolve().parents[4] / "shared" / "STANDARDS.md"
PRESET = {"UL 2034": "co-ul2034", "EN 50291-1": "co-en50291"}
NEVER = math.inf

# (standard, ppm, no alarm before (min), alarm by (min), or for a "no alarm" row: how long)
ROWS: list[tuple[str, float, float, float]] = [
    ("UL 2034", 400, 4, 15),
    ("UL 2034", 150, 10, 50),
    ("UL 2034", 70, 60, 240),
    ("UL 2034", 30, 30 * 24 * 60, NEVER),
    ("EN 50291-1", 300, 0, 3),
    ("EN 50291-1", 100, 10, 40),
    ("EN 50291-1", 50, 60, 90),
    ("EN 50291-1", 30, 120, NEVER),
]
CO = device("co-1", "co")


def test_rows_are_the_standards_table() -> None:
    """The rows above are every row of STANDARDS.md's CO table (when the file is beside us)."""
    if not STANDARDS.is_file():
        pytest.skip("STANDARDS.md is not beside the project")
    text = STANDARDS.read_text(encoding="utf-8")
    found = re.findall(r"^\| (UL 2034|EN 50291-1) \| (\d+) \| ([^|]+) \| ([^|]+) \|", text, re.M)
    assert len(found) == len(ROWS)
    for (standard, ppm, before, by), row in zip(found, ROWS, strict=True):
        assert (standard, float(ppm)) == row[:2]
        if "no alarm" in before:
            days = re.search(r"(\d+) days", before)
            minutes = int(days.group(1)) * 1440 if days else int(re.findall(r"\d+", before)[0])
            assert (minutes, NEVER) == row[2:]
        else:
            lower = 0 if before.strip() == "–" else int(before.split()[0])
            assert (lower, int(by.split()[0])) == row[2:]


def exposure_alarm_minutes(preset: str, ppm: float, minutes: float, every: float) -> float | None:
    """Clean air for 10 min, then ``ppm`` from t=0; the first alarm in minutes from t=0."""
    sim = Sim(preset)
    sim.run(CO, lambda t: {"co_ppm": 0.0 if t < 0 else ppm}, -600, minutes * 60, every, 10)
    first = sim.first(Phase.RAISED)
    return None if first is None else first / 60


@pytest.mark.parametrize("every", [10.0, 60.0], ids=["10s", "60s"])
@pytest.mark.parametrize(
    ("standard", "ppm", "not_before", "by"),
    [r for r in ROWS if r[3] is not NEVER],
    ids=[f"{r[0]}-{r[1]:g}ppm" for r in ROWS if r[3] is not NEVER],
)
def test_alarms_inside_the_window(
    standard: str, ppm: float, not_before: float, by: float, every: float
) -> None:
    alarm = exposure_alarm_minutes(PRESET[standard], ppm, by + 5, every)
    assert alarm is not None, f"{standard} {ppm} ppm: no alarm by {by} min"
    assert not_before <= alarm <= by, f"{standard} {ppm} ppm alarmed at {alarm:.2f} min"


@pytest.mark.parametrize(
    ("standard", "ppm", "minutes"),
    [(r[0], r[1], r[2]) for r in ROWS if r[3] is NEVER],
    ids=[f"{r[0]}-{r[1]:g}ppm" for r in ROWS if r[3] is NEVER],
)
def test_no_alarm_rows(standard: str, ppm: float, minutes: float) -> None:
    assert exposure_alarm_minutes(PRESET[standard], ppm, minutes, 60.0) is None


def test_the_model_matches_the_figures_in_standards() -> None:
    """10 % COHb at 70 ppm in about 185 min, 150 ppm about 48, 400 ppm about 15; 30 ppm ~5 %."""
    work = 0.0404
    assert minutes_to(10, 70, 0.5, work) == pytest.approx(185, abs=3)
    assert minutes_to(10, 150, 0.5, work) == pytest.approx(48, abs=1)
    assert minutes_to(10, 400, 0.5, work) == pytest.approx(15, abs=0.5)
    assert equilibrium(30) == pytest.approx(5.0, abs=0.1)
    assert minutes_to(10, 30, 0.5, work) == math.inf
    # Piecewise integration of a constant equals the closed form.
    stepwise = 0.5
    for _ in range(60):
        stepwise = advance(stepwise, 150, 1.0, work)
    assert stepwise == pytest.approx(advance(0.5, 150, 60.0, work))


def test_a_ramp_alarms_between_its_bounds() -> None:
    """0 -> 400 ppm over 30 min: earlier than the 150 ppm row, later than constant 400 ppm."""
    sim = Sim("co-ul2034")
    sim.run(CO, lambda t: {"co_ppm": min(400.0, max(0.0, t / 1800 * 400))}, 0, 3600, 30, 10)
    first = sim.first()
    assert first is not None and 15 * 60 < first < 40 * 60


def test_a_short_high_puff_does_not_alarm_but_a_long_one_does() -> None:
    puff = Sim("co-ul2034")  # 400 ppm for 3 min (a car started in a garage), then clean
    puff.run(CO, lambda t: {"co_ppm": 400.0 if t < 180 else 0.0}, 0, 4 * 3600, 30, 30)
    assert puff.log == []
    long = Sim("co-ul2034")
    long.run(CO, lambda t: {"co_ppm": 400.0 if t < 1200 else 0.0}, 0, 4 * 3600, 30, 30)
    assert [c[2] for c in long.changes()] == ["raised", "cleared"]


def test_a_step_up_escalates_and_the_alarm_clears_only_when_air_and_dose_are_clean() -> None:
    sim = Sim("co-ul2034")

    def level(t: float) -> dict[str, float]:
        return {"co_ppm": 150.0 if t < 3600 else 400.0 if t < 5400 else 0.0}

    sim.run(CO, level, 0, 6 * 3600, 30, 30)
    phases = [(c[2], c[3]) for c in sim.changes()]
    assert phases == [("raised", "Severe"), ("updated", "Extreme"), ("cleared", "Extreme")]
    cleared = sim.first(Phase.CLEARED)
    assert cleared is not None and cleared > 5400 + 300  # clean air held 5 min, dose decayed


@pytest.mark.parametrize("preset", ["co-ul2034", "co-en50291"])
def test_fluctuating_levels_accumulate_like_their_mean(preset: str) -> None:
    """150 ppm +- 100 ppm in 10-min waves alarms close to a steady 150 ppm."""
    steady = exposure_alarm_minutes(preset, 150, 120, 30)
    sim = Sim(preset)
    sim.run(CO, lambda t: {"co_ppm": 150 + 100 * math.sin(t / 600 * 2 * math.pi)}, 0, 7200, 30, 30)
    wavy = sim.first()
    assert steady is not None and wavy is not None
    assert abs(wavy / 60 - steady) < 6


def test_cooking_spikes_do_not_alarm() -> None:
    """Brief 60-120 ppm spikes (a gas hob lit) a few times an hour never reach the alarm."""
    sim = Sim("co-en50291")

    def cooking(t: float) -> dict[str, float]:
        return {"co_ppm": 110.0 if (t % 1200) < 120 else 5.0}

    sim.run(CO, cooking, 0, 6 * 3600, 30, 30)
    assert sim.log == []
