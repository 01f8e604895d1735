"""``anmin eval --skab`` on a synthetic folder in SKAB's layout (the tests never read
../shared): every file scored, and the report split into tuning, held-out and anomaly-free."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

from anmin.commands.eval import app
from anmin.evaluation import skab

HEAD = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS"
)
RULES = Path(skab.__file__).with_name("skab-pump.yaml")


def write(path: Path, seed: int, rows: int, anomaly: tuple[int, int] | None) -> None:
    """A pump at 1 Hz; inside ``anomaly`` the inlet valve closes: flow and pressure drop."""
    rng = random.Random(seed)
    lines = [HEAD + (";anomaly;changepoint" if anomaly else "")]
    for i in range(rows):
        bad = anomaly is not None and anomaly[0] <= i < anomaly[1]
        flow = (20.0 if bad else 32.0) + rng.gauss(0, 0.5)
        pressure = (0.2 if bad else 0.05) + rng.gauss(0, 0.01)
        values = [0.027 + rng.gauss(0, 0.001), 0.039 + rng.gauss(0, 0.001)]
        values += [1.0 + rng.gauss(0, 0.05), pressure, 75.0, 25.0, 230 + rng.gauss(0, 2), flow]
        when = f"2020-03-09 {10 + i // 3600:02d}:{(i // 60) % 60:02d}:{i % 60:02d}"
        cells = [when, *(f"{v:.5f}" for v in values)]
        if anomaly:
            cells += [str(float(bad)), "0.0"]
        lines.append(";".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_skab_report_is_split_into_tuning_held_out_and_anomaly_free(tmp_path: Path) -> None:
    data = tmp_path / "skab" / "data"
    write(data / "valve1" / "0.csv", 1, 900, (600, 750))
    write(data / "valve1" / "1.csv", 2, 900, (620, 760))
    write(data / "anomaly-free" / "anomaly-free.csv", 3, 1500, None)
    assert [skab.group(p) for p in skab.files(tmp_path / "skab")] == ["tuning", "held-out"]
    out = tmp_path / "report"
    args = ["--no-sim", "--no-plots", "--skab", str(tmp_path / "skab"), "--out", str(out)]
    args += ["--rules", str(RULES), "--detector", "pump_envelope"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["source"]: r for r in json.loads((out / "results.json").read_text())["detectors"]}
    assert set(rows) == {"skab", "skab tuning", "skab held-out", "skab anomaly-free"}
    assert rows["skab"]["series"] == 2 and rows["skab"]["events_detected"] == 2
    assert rows["skab tuning"]["series"] == rows["skab held-out"]["series"] == 1
    assert rows["skab"]["f1"] > 0.85 and rows["skab"]["far_pct"] < 10  # the 30 s clear
    assert rows["skab anomaly-free"]["far_pct"] < 5 and rows["skab anomaly-free"]["f1"] == 0
