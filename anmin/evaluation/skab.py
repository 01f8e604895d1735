"""The Skoltech Anomaly Benchmark (SKAB): a water-pump test bed at 1 Hz, one CSV per
experiment (``;``-separated, ``anomaly`` and ``changepoint`` columns). Not shipped: the data
folder is an argument (``anmin eval --skab DIR``).

Split, as SKAB's own loader makes it: the first 400 rows of each file are its training part
(the detector learns them; they are not in F1 / FAR / MAR), the rest is scored. NAB label rows
are the starts of the labelled anomaly segments.

Tuning split (docs/detection.md): every choice of detector and rule settings was made on the
even-numbered file of each folder plus the anomaly-free recording (``tuning``); the
odd-numbered files are ``held-out``. Folders hold different experiments (valve1 is only inlet
valve closures, "other" holds every other kind), so a split by folder would tune on one kind
of fault and test on others; by number, each kind is on both sides.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from anmin.evaluation.series import Series

TRAIN_ROWS = 400
# SKAB's columns, by the metric names the pump detector reads (rules/detectors.py).
COLUMNS = {
    "Accelerometer1RMS": "accel_1_rms_g",
    "Accelerometer2RMS": "accel_2_rms_g",
    "Current": "motor_current_a",
    "Pressure": "pressure_bar",
    "Temperature": "temp_c",
    "Thermocouple": "thermocouple_c",
    "Voltage": "voltage_v",
    "Volume Flow RateRMS": "flow_m3h",
}


def files(folder: Path, *, anomaly_free: bool = False) -> list[Path]:
    """The labelled experiments (valve1, valve2, other), or the ``anomaly-free`` recording."""
    root = folder / "data" if (folder / "data").is_dir() else folder
    found = [
        p
        for p in sorted(root.rglob("*.csv"))
        if ("anomaly-free" in p.parts) == anomaly_free and p.is_file()
    ]
    return sorted(found, key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else 0))


def group(path: Path) -> str:
    """The split a file belongs to (see the module's docstring)."""
    if "anomaly-free" in path.parts:
        return "anomaly-free"
    return "tuning" if path.stem.isdigit() and int(path.stem) % 2 == 0 else "held-out"


def load(path: Path, root: Path) -> Series:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=";")
        times, rows, labels = [], [], []
        for line in reader:
            when = datetime.strptime(line["datetime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            times.append(when)
            rows.append({name: float(line[column]) for column, name in COLUMNS.items()})
            labels.append(int(float(line.get("anomaly") or 0)))
    events = [i for i, v in enumerate(labels) if v and (i == 0 or not labels[i - 1])]
    name = "skab/" + "/".join(path.relative_to(root).with_suffix("").parts[-2:])
    # Rows with the same second (SKAB has a few): keep the order, nudge the time.
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            times[i] = times[i - 1].replace(
                microsecond=min(times[i - 1].microsecond + 1000, 999_999)
            )
    return Series(
        name=name,
        source="skab",
        kind="pump",
        times=times,
        rows=rows,
        labels=labels,
        events=events,
        scored_from=TRAIN_ROWS,
        interval_s=1.0,
        group=group(path),
    )
