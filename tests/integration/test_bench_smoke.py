"""The benchmarks still run: ``bench/run --quick`` once, at tiny sizes, against real Mosquitto,
PostgreSQL and InfluxDB. Only that it completed and wrote every section is checked; timings
are figures for docs/performance.md, never assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = [
    "## Machine",
    "## Headline figures",
    "## End to end",
    "## Scale: one gateway agent",
    "## Scale: one hub process",
    "## Memory",
    "## Detectors",
    "## Hub intake",
    "## Broadcast fan-out",
    "## Side by side: Node-RED",
    "## Simulator",
    "## Runs",
]


def test_bench_run_quick_completes_and_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    report = out.read_text()
    assert (tmp_path / "performance.json").exists()  # the figures, to write the report again
    missing = [s for s in SECTIONS if f"\n{s}\n" not in report]
    assert not missing, f"sections missing from the report: {missing}"
    assert "failed (" not in report  # the Runs table lists any benchmark that did not finish
    # Every benchmark produced its figures, not only its section heading.
    for figure in (
        "edge agent sustained ingest",
        "(a) reading -> siren command at the device",
        "(d) reading -> family's e-mail",
        "broadcast to 4 speakers",
        "hub intake, PostgreSQL",
        "simulator into Mosquitto",
        "largest number of gateways one hub process serves",
        "edge agent RSS, 100 devices",
        "| msgspec |",
    ):
        assert figure in report, f"no {figure!r} in the report"
