"""``anmin eval`` as CI runs it: a small simulated pump room with a cavitation incident."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from anmin.commands.eval import app

SCENARIO = """\
name: pump-room
start: 2025-03-03T05:00:00+08:00
duration: 50m
utc_offset_h: 8
seed: 3
sites:
  - id: north
    buildings:
      - id: n1
        devices:
          - {kind: pump, room: pump-room}
          - {kind: locker, doors: 4, chilled: 1}
incidents:
  - {kind: pump_cavitation, at: 25m, device: pump-n1, ramp: 5m, duration: 15m}
"""


def test_eval_smoke_on_a_small_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "pump-room.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["--scenario", str(scenario), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (row,) = data["detectors"]
    assert row["detector"] == "pump" and row["source"] == "sim"
    assert row["events_detected"] == 1 and row["median_delay_s"] < 120
    assert row["far_pct"] < 20 and row["nab_standard"] > 50  # the ISO 5-min mean lags
    (pump,) = [r for r in data["simulator_incidents"] if r["kind"] == "pump_cavitation"]
    assert pump["detected"] == 1 and pump["false"] == 0
    assert list((out / "plots").glob("*.png"))
    assert "NAB standard" in (out / "report.md").read_text(encoding="utf-8")
