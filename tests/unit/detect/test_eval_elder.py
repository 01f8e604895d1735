"""The elder-care rules over the simulator's night, scored against its ground truth: night
wandering is caught, a normal night raises nothing. (Local time matters: the scenario's UTC
offset is what "22:00-06:00" means.)"""

from __future__ import annotations

from pathlib import Path

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


def scored(tmp_path: Path, incidents: str) -> Score:
    path = tmp_path / "night.yaml"
    path.write_text(NIGHT + incidents, encoding="utf-8")
    recording = sim.record(path, seed=None, duration_s=None)
    assert recording.utc_offset == "+08:00"
    return sim.score_rules(recording, load_preset("elder-care").resolved())


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
