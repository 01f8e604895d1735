"""The elder-care rules over the simulator's night, scored against its ground truth: night
wandering is caught, a normal night raises nothing; a resident not up an hour after their usual
wake time is caught, normal weekday and weekend mornings raise nothing. (Local time matters: the
scenario's UTC offset is what "22:00-06:00" and "05:30" mean.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from anmin.evaluation import sim
from rules import load_preset
from rules.scoring import Score

NIGHT = """\
name: elder-night
start: 2025-03-03T21:00:00+08:00
duration: 10h
utc_offset_h: 8
seed: 11
templates:
  elder_flat:
    residents:
      - {id: elder, elderly: true, wake_h: 5.5, sleep_h: 21.0}
    devices:
      - {kind: pir, room: kitchen}
      - {kind: pir, room: living}
      - {kind: pir, room: bedroom}
      - {kind: pir, room: bathroom}
      - {kind: pir, room: hallway}
      - {kind: door, room: hallway}
      - {kind: bed, room: bedroom, resident: elder}
      - {kind: wearable, resident: elder}
sites:
  - id: north
    buildings:
      - id: n1
        units:
          - {id: "101", template: elder_flat}
          - {id: "102", template: elder_flat}
"""


def scored(
    tmp_path: Path, incidents: str, scenario: str = NIGHT, *, routines: bool = True
) -> Score:
    path = tmp_path / "night.yaml"
    path.write_text(scenario + incidents, encoding="utf-8")
    recording = sim.record(path, seed=None, duration_s=None)
    assert recording.utc_offset == "+08:00"
    rules = load_preset("elder-care").resolved()
    return sim.score_rules(recording, rules, routines=routines)


def test_a_normal_night_raises_nothing(tmp_path: Path) -> None:
    score = scored(tmp_path, "incidents: []\n")
    assert score.false == [] and score.missed == []


def test_night_wandering_is_caught_at_night_local_time(tmp_path: Path) -> None:
    incident = "  - {kind: night_wandering, at: 5h, resident: elder-n1-102, duration: 20m}\n"
    score = scored(tmp_path, "incidents:\n" + incident)
    row = score.kinds["night_wandering"]
    assert (row.detected, row.missed, row.false) == (1, 0, 0)
    assert row.delays_s == [0.0]  # the door's first open reading, sent at once
    # Known: back in bed, the resident shows little motion and bed occupancy is in the
    # resident's scope, not the door's, so "not back home" may follow (docs/detection.md).
    assert {t.kind for t in score.false} <= {"not_back_home"}


def morning(day: str, seed: int) -> str:
    """04:00-08:00 local on ``day``, four elder flats (usual wake 05:30, weekends 06:15)."""
    text = NIGHT.replace("2025-03-03T21:00:00", f"{day}T04:00:00")
    text = text.replace("duration: 10h", "duration: 4h").replace("seed: 11", f"seed: {seed}")
    flats = "".join(f'          - {{id: "{u}", template: elder_flat}}\n' for u in ("101", "102"))
    return text.replace(flats, "          - {floors: [1, 2], per_floor: 2, template: elder_flat}\n")


def test_the_configured_wake_times_are_the_scenarios(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(morning("2025-03-03", 1) + "incidents: []\n", encoding="utf-8")
    recording = sim.record(path, seed=None, duration_s=None)
    assert {(t.key, t.wake, t.weekend_wake) for t in recording.routines} == {
        (f"elder-n1-{unit}", "05:30", "06:15") for unit in ("101", "102", "201", "202")
    }


@pytest.mark.parametrize("day", ["2025-03-03", "2025-03-04", "2025-03-08", "2025-03-09"])
@pytest.mark.parametrize("seed", [1, 2])
def test_normal_mornings_raise_no_inactivity(tmp_path: Path, day: str, seed: int) -> None:
    """Weekdays (Monday, Tuesday) and the weekend (up 45 min later): with each resident's
    usual wake time configured, and with the preset's 07:00 alone."""
    for routines in (True, False):
        score = scored(tmp_path, "incidents: []\n", morning(day, seed), routines=routines)
        assert [t for t in score.false if t.kind == "inactivity"] == []


def test_a_resident_not_up_is_caught_an_hour_after_the_usual_wake_time(tmp_path: Path) -> None:
    incident = (
        "  - {kind: missed_routine, at: 90m, resident: elder-n1-102, duration: 2h,"
        " latest_after: 75m}\n"
    )
    score = scored(tmp_path, "incidents:\n" + incident, morning("2025-03-03", 3))
    row = score.kinds["missed_routine"]
    assert (row.detected, row.missed, row.false) == (1, 0, 0)
    assert 3600 <= row.delays_s[0] <= 3600 + 10  # 05:30 + 1 h, on the next 10 s tick
    assert [t for t in score.false if t.kind == "inactivity"] == []
    # With the preset's 07:00 alone the alarm would come at 08:00: too late for this one.
    late = scored(tmp_path, "incidents:\n" + incident, morning("2025-03-03", 3), routines=False)
    assert late.kinds["missed_routine"].missed == 1
