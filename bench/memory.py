"""Memory (issue 13): the edge agent's RSS at 100, 1,000 and 10,000 devices, and what each
optional dependency costs to import (time and RSS), each in a fresh interpreter.

The agent (``python -m anmin edge run``, every preset) is measured once started and again after
every device has sent two readings (so each has its per-device rule state). The baseline is a
bare interpreter's RSS, measured the same way in the same run.

    .venv/bin/python bench/memory.py [--devices 100,1000,10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EdgeAgent, Load, write_json
from bus.broker import Mosquitto

# (what a reader knows it as, the module the code imports)
MODULES = [
    ("numpy", "numpy"),
    ("scikit-learn (IsolationForest)", "sklearn.ensemble"),
    ("influxdb-client", "influxdb_client"),
    ("prometheus-client", "prometheus_client"),
    ("fastapi", "fastapi"),
    ("uvicorn", "uvicorn"),
    ("sqlalchemy", "sqlalchemy"),
    ("alembic", "alembic.command"),
    ("psycopg", "psycopg"),
    ("apprise", "apprise"),
    ("pypinyin", "pypinyin"),
    ("matplotlib (pyplot)", "matplotlib.pyplot"),
    ("cryptography (x509)", "cryptography.x509"),
    ("aiomqtt", "aiomqtt"),
    ("paho-mqtt", "paho.mqtt.client"),
    ("msgspec", "msgspec"),
    ("anmin: wire", "wire"),
    ("anmin: rules", "rules"),
    ("anmin: edge agent", "edge.agent"),
    ("anmin: hub app", "hub.app"),
]
QUICK_MODULES = [("msgspec", "msgspec"), ("anmin: wire", "wire")]

PROBE = """\
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss()
began = time.perf_counter()
if sys.argv[1]:
    __import__(sys.argv[1])
took = time.perf_counter() - began
print(f"{took} {before} {rss()}")
"""


def import_cost(module: str) -> dict[str, float]:
    """Seconds to import ``module`` and RSS added, in a fresh interpreter; '' = nothing."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        return {"error": 1.0}
    took, before, after = (float(x) for x in done.stdout.split())
    return {"seconds": took, "rss_before_mb": before, "rss_mb": after, "added_mb": after - before}


def agent_rss(port: int, devices: int) -> dict[str, float]:
    with EdgeAgent(port, devices=devices) as agent:
        start = agent.rss_mb()
        rate = float(min(5000, max(200, devices)))
        with Load(port, devices, rate):
            deadline = time.monotonic() + 120
            while agent.processed() < 2 * devices and time.monotonic() < deadline:
                time.sleep(0.2)
        return {
            "devices": devices,
            "start_s": agent.started_s,
            "rss_start_mb": start,
            "rss_mb": agent.rss_mb(),
            "readings": agent.processed(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", default="100,1000,10000")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    counts = [int(n) for n in args.devices.split(",")]
    modules = MODULES
    if args.quick:
        counts, modules = [100], QUICK_MODULES
    results: dict[str, Any] = {"agents": [], "imports": []}
    bare = import_cost("")
    results["bare_interpreter_rss_mb"] = bare.get("rss_mb", float("nan"))
    print(f"bare interpreter: RSS {results['bare_interpreter_rss_mb']:.1f} MB", flush=True)
    with Mosquitto(persistence=False) as broker:
        for n in counts:
            figures = agent_rss(broker.port, n)
            results["agents"].append(figures)
            print(
                f"edge agent, {n:>6,} devices: RSS {figures['rss_start_mb']:.0f} MB started"
                f" ({figures['start_s']:.1f} s), {figures['rss_mb']:.0f} MB after"
                f" {figures['readings']:,.0f} readings",
                flush=True,
            )
    for name, module in modules:
        cost = import_cost(module)
        results["imports"].append({"name": name, "module": module, **cost})
        if "error" in cost:
            print(f"import {module:24s} failed (not installed?)", flush=True)
        else:
            print(
                f"import {module:24s} {cost['seconds'] * 1000:7.0f} ms"
                f"  +{cost['added_mb']:6.1f} MB",
                flush=True,
            )
    write_json(args.json, results)
    if args.json is None:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
