"""``bench/run``: every benchmark in one go, and docs/performance.md written from the results.

Each benchmark runs as its own process against its own real servers (Mosquitto, PostgreSQL,
influxd), one after another so that they do not measure each other; its output is shown as it
runs and parsed (or read from the JSON it writes). Every figure sits beside a baseline measured
in the same run and beside its target from the issues.

    .venv/bin/python bench/run            # the full run (about 10 minutes on 2 cores)
    .venv/bin/python bench/run --quick    # tiny sizes, to check that everything runs
    .venv/bin/python bench/run --only e2e,scale --out /tmp/perf.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DEFAULT_OUT = ROOT / "docs" / "performance.md"
print_lock = threading.Lock()
running: set[subprocess.Popen[str]] = set()  # to pass Ctrl-C on to the benchmark running
stopping = threading.Event()


@dataclass(frozen=True)
class Bench:
    key: str
    title: str
    script: str
    full: list[str]
    quick: list[str]
    writes_json: bool = False


BENCHES = [
    Bench(
        "edge",
        "Edge agent ingest (issue 5)",
        "edge_throughput.py",
        ["--seconds", "4", "--rates", "5000,10000,20000,40000,50000,60000,80000",
         "--samples", "400"],
        ["--devices", "50", "--seconds", "0.5", "--rates", "1000", "--samples", "3",
         "--background", "200", "--bare-count", "5000"],
    ),
    Bench(
        "edge_parts",
        "Edge agent ingest, the agent in two parts (issue 5)",
        "edge_throughput.py",
        ["--seconds", "4", "--rates", "5000,20000,40000,50000,60000,70000,80000",
         "--samples", "400", "--parts", "2"],
        ["--devices", "50", "--seconds", "0.5", "--rates", "1000", "--samples", "3",
         "--background", "200", "--bare-count", "5000", "--parts", "2"],
    ),
    Bench(
        "sim",
        "Simulator (issue 3)",
        "sim_throughput.py",
        ["--devices", "10000", "--rate", "20000", "--seconds", "5"],
        ["--devices", "100", "--rate", "500", "--seconds", "0.5"],
    ),
    Bench("detect", "Detectors (issue 6)", "detect_cost.py", ["4000"], ["100"]),
    Bench(
        "hub",
        "Hub intake and notifications (issue 7)",
        "hub_intake.py",
        ["--events", "5000", "--hubs", "2", "--notifications", "1000"],
        ["--events", "50", "--hubs", "1", "--notifications", "5"],
    ),
    Bench(
        "fanout",
        "Broadcast fan-out (issue 8)",
        "broadcast_fanout.py",
        ["--gateways", "50", "--speakers", "20", "--rounds", "5"],
        ["--gateways", "2", "--speakers", "2", "--rounds", "1"],
    ),
    Bench(
        "fire",
        "Fire reading to first speaker (issue 8)",
        "fire_to_speaker.py",
        ["--rounds", "20"],
        ["--rounds", "2"],
    ),
    Bench(
        "fanout_bare",
        "Fan-out baseline: the broker's own delivery",
        "fanout_baseline.py",
        ["--gateways", "50", "--speakers", "20", "--rounds", "5"],
        ["--gateways", "2", "--speakers", "2", "--rounds", "1"],
        writes_json=True,
    ),
    Bench(
        "nodered",
        "Node-RED, the same load (issues 5 and 13)",
        "nodered.py",
        ["--rates", "5000,10000,20000,40000,50000,60000,80000", "--seconds", "4",
         "--samples", "200"],
        ["--rates", "500", "--seconds", "0.5", "--samples", "3", "--background", "200"],
        writes_json=True,
    ),
    Bench(
        "e2e",
        "End to end (issue 13)",
        "e2e_latency.py",
        ["--rates", "1000,5000", "--samples", "100"],
        ["--rates", "200", "--samples", "3", "--devices", "50", "--speakers", "1",
         "--warmup", "0.5"],
        writes_json=True,
    ),
    Bench(
        "scale",
        "Scale (issue 13)",
        "scale.py",
        ["--devices", "2500,5000,10000,20000,40000", "--budget", "150"],
        ["--quick"],
        writes_json=True,
    ),
    Bench(
        "memory", "Memory (issue 13)", "memory.py", ["--devices", "100,1000,10000"], ["--quick"],
        writes_json=True,
    ),
    Bench(
        "telemetry",
        "Telemetry flush and the agent's loop (issue 5)",
        "telemetry_stall.py",
        ["--devices", "1000,10000", "--flushes", "10"],
        ["--devices", "100", "--flushes", "2"],
        writes_json=True,
    ),
]  # fmt: skip
SECTIONS = [b.key for b in BENCHES]
SLOW = {
    "hub": 5,
    "e2e": 4,
    "scale": 3,
    "edge": 2,
    "edge_parts": 2,
    "nodered": 1,
}  # rank of how long each takes


@dataclass
class Outcome:
    bench: Bench
    returncode: int = -1
    seconds: float = 0.0
    output: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        return "\n".join(self.output)


def say(line: str) -> None:
    with print_lock:
        print(line, flush=True)


def run_bench(bench: Bench, quick: bool, timeout: float, tmp: Path) -> Outcome:
    outcome = Outcome(bench)
    if stopping.is_set():
        outcome.output.append("(not run: interrupted)")
        return outcome
    args = [sys.executable, str(BENCH / bench.script), *(bench.quick if quick else bench.full)]
    json_path = tmp / f"{bench.key}.json"
    if bench.writes_json:
        args += ["--json", str(json_path)]
    say(f"\n== {bench.title}: {' '.join(args[1:])}")
    began = time.perf_counter()
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running.add(process)
    # SIGINT first: the benchmark's own clean-up then stops its servers; SIGKILL if it hangs.
    timer = threading.Timer(timeout, process.send_signal, args=(signal.SIGINT,))
    killer = threading.Timer(timeout + 60, process.kill)
    timer.start()
    killer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            outcome.output.append(line)
            say(f"[{bench.key}] {line}")
        outcome.returncode = process.wait()
    finally:
        timer.cancel()
        killer.cancel()
        running.discard(process)
    outcome.seconds = time.perf_counter() - began
    if outcome.returncode != 0:
        outcome.output.append(f"(exited with {outcome.returncode}; timeout {timeout:.0f} s)")
    if bench.writes_json and json_path.exists():
        outcome.data = json.loads(json_path.read_text())
    else:
        parse = PARSERS.get(bench.key)
        outcome.data = parse(outcome.text) if parse is not None else {}
    say(f"== {bench.title}: {'done' if outcome.ok else 'FAILED'} in {outcome.seconds:.0f} s")
    return outcome


# -- parsing the benchmarks that print ---------------------------------------------------------


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _grab(text: str, pattern: str) -> tuple[str, ...] | None:
    match = re.search(pattern, text)
    return match.groups() if match else None


def parse_edge(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if g := _grab(text, r"bare paho subscriber on this broker: ([\d,.]+) msgs/s"):
        out["bare"] = _num(g[0])
    memory = r"RSS ([\d.]+) MB, PSS ([\d.]+) MB"
    if g := _grab(text, r"agent \((\d+) part\(s\)\) at start \((\d+) devices[^)]*\): " + memory):
        out["parts"], out["devices"] = int(g[0]), int(g[1])
        out["rss_start_mb"], out["pss_start_mb"] = _num(g[2]), _num(g[3])
    if g := _grab(text, r"sustained: ([\d,.]+) readings/s; ratio to bare paho: ([\d.]+)"):
        out["sustained"], out["ratio"] = _num(g[0]), _num(g[1])
    latency = r"reading -> alert at ([\d,.]+)/s background: p50 ([\d.]+) ms, p99 ([\d.]+) ms"
    if g := _grab(text, "edge agent: " + latency):
        out["background"], out["p50"], out["p99"] = (_num(x) for x in g)
    if g := _grab(text, "plain paho agent: " + latency):
        out["plain_p50"], out["plain_p99"] = _num(g[1]), _num(g[2])
    if g := _grab(text, r"plain paho agent: sustained ([\d,.]+) readings/s"):
        out["plain"] = _num(g[0])
    if g := _grab(text, r"agent after the run: " + memory):
        out["rss_after_mb"], out["pss_after_mb"] = _num(g[0]), _num(g[1])
    if g := _grab(text, r"agent after the run: [^\n]*resident once ([\d.]+) MB"):
        out["once_after_mb"] = _num(g[0])
    if g := _grab(
        text, r"durable commit of an alert on this disk[^:]*: p50 ([\d.]+) ms, p99 ([\d.]+)"
    ):
        out["commit_p50"], out["commit_p99"] = _num(g[0]), _num(g[1])
    inside = r": p50 <= ([\d.]+|inf) ms, p99 <= ([\d.]+|inf) ms"  # inf: past the last bound
    if g := _grab(text, r"inside \(anmin_edge_alarm_seconds\):[^:]*" + inside):
        out["inside_p50"], out["inside_p99"] = _num(g[0]), _num(g[1])
    if g := _grab(text, r"inside \(anmin_edge_alarm_commit_seconds\):[^:]*" + inside):
        out["inside_commit_p50"], out["inside_commit_p99"] = _num(g[0]), _num(g[1])
    return out


def parse_sim(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if g := _grab(text, r"engine alone[^:]*: ([\d,.]+) readings/s"):
        out["engine"] = _num(g[0])
    if g := _grab(text, r"as fast as possible: ([\d,.]+) readings/s"):
        out["fast"] = _num(g[0])
    if g := _grab(text, r"paced at ([\d,.]+)/s: ([\d,.]+) readings/s"):
        out["paced_target"], out["paced"] = _num(g[0]), _num(g[1])
    if g := _grab(text, r"bare paho-mqtt publisher loop: ([\d,.]+) msgs/s"):
        out["bare"] = _num(g[0])
    if g := _grab(text, r"one process, [^;]*; (\d+) devices"):
        out["devices"] = int(g[0])
    return out


def parse_detect(text: str) -> dict[str, Any]:
    rows = re.findall(r"^(\S+)\s+([\d.]+)\s+([\d,]+)\s*$", text, flags=re.M)
    return {"detectors": [(name, _num(us), int(_num(size))) for name, us, size in rows]}


def parse_hub(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if g := _grab(text, r"intake\s+SQLite,\s+1 hub:\s+([\d.]+) events/s"):
        out["sqlite"] = _num(g[0])
    if g := _grab(text, r"intake\s+PostgreSQL,\s+(\d+) hubs?:\s+([\d.]+) events/s"):
        out["hubs"], out["postgres"] = int(g[0]), _num(g[1])
    for name, rate in re.findall(r"notify\s+(SQLite|PostgreSQL)\s+webhook:\s+([\d.]+)", text):
        out[f"notify_{name.lower()}"] = _num(rate)
    return out


def parse_fanout(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if g := _grab(text, r"([\d,]+) speakers on (\d+) gateways"):
        out["speakers"], out["gateways"] = int(_num(g[0])), int(g[1])
    if g := _grab(
        text,
        r"99 % of receipts in median ([\d.]+) s \(worst ([\d.]+) s\), "
        r"100 % in median ([\d.]+) s \(worst ([\d.]+) s\)",
    ):
        keys = ("p99_median_s", "p99_worst_s", "p100_median_s", "p100_worst_s")
        out.update(zip(keys, (_num(x) for x in g), strict=True))
    firsts = sorted(_num(x) for x in re.findall(r"first in ([\d.]+) s", text))
    if firsts:
        out["first_receipt_median_s"] = firsts[len(firsts) // 2]
    # Another part of the benchmark (the fire -> first speaker figure): quoted as printed.
    out["first_speaker_lines"] = [
        line.strip() for line in text.splitlines() if re.search(r"(?i)first.speaker", line)
    ]
    return out


def parse_fire(text: str) -> dict[str, Any]:
    rows = re.findall(
        r"^\s*(\w+)\s+n=(\d+)\s+p50=([\d.]+)\s+p99=([\d.]+)\s+max=([\d.]+)", text, flags=re.M
    )
    return {
        stage: {"n": int(n), "p50": _num(p50), "p99": _num(p99), "max": _num(top)}
        for stage, n, p50, p99, top in rows
    }


PARSERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "fire": parse_fire,
    "edge": parse_edge,
    "edge_parts": parse_edge,
    "sim": parse_sim,
    "detect": parse_detect,
    "hub": parse_hub,
    "fanout": parse_fanout,
}


# -- the machine ------------------------------------------------------------------------------


def _first_line(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    system = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system = line.split("=", 1)[1].strip('"')
    sys.path.insert(0, str(ROOT))
    try:
        from tests.integration.hub.postgres import PostgresUnavailable, find_bin_dir

        try:
            postgres = _first_line([str(find_bin_dir() / "postgres"), "--version"])
        except PostgresUnavailable:
            postgres = "not installed"
    finally:
        sys.path.remove(str(ROOT))
    packages = []
    for name in ("paho-mqtt", "aiomqtt", "msgspec", "SQLAlchemy", "psycopg", "fastapi"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages.append(f"{name} {importlib.metadata.version(name)}")
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} (this process may use {len(os.sched_getaffinity(0))})",
        "RAM": ram,
        "OS": system,
        "kernel": platform.release(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Mosquitto": _first_line(["mosquitto", "-h"]),
        "PostgreSQL": postgres,
        "InfluxDB": _first_line(["influxd", "version"]),
        "libraries": ", ".join(packages),
    }


# -- the report -------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ",.0f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:{spec}}{unit}"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("meets" if ok else "**misses**")


def at_most(value: Any, limit: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value <= limit)


def at_least(value: Any, limit: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value >= limit)


def ratio(a: Any, b: Any) -> str:
    if not a or not b or any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return "–"
    return f"{a / b:.2f}"


def _parts_rows(parts: dict[str, Any], memory: dict[str, Any]) -> list[list[str]]:
    """The agent in parts (``parts: 2``, edge/parts.py): the issue's targets again."""
    n, devices = parts.get("parts", 2), f"{parts.get('devices', 1000):,}"
    sustained, share = parts.get("sustained"), parts.get("ratio")
    both = at_least(sustained, 50_000)
    if both is not None and share is not None:
        both = both and share >= 0.9
    return [
        [
            f"edge agent in {n} parts (parts: {n}) sustained ingest, {devices} devices, every"
            " preset",
            fmt(sustained, unit=" readings/s"),
            f"bare paho subscriber {fmt(parts.get('bare'), unit=' msgs/s')}",
            fmt(share, ".2f"),
            ">= 50,000/s, ratio >= 0.9",
            verdict(both),
        ],
        [
            "reading published -> its alert received, p50 / p99 at"
            f" {fmt(parts.get('background'))}/s, {n} parts",
            f"{fmt(parts.get('p50'), '.2f')} / {fmt(parts.get('p99'), '.2f', ' ms')}",
            f"plain paho agent p50 / p99 {fmt(parts.get('plain_p50'), '.2f')} /"
            f" {fmt(parts.get('plain_p99'), '.2f', ' ms')}",
            ratio(parts.get("p99"), parts.get("plain_p99")),
            "<= 1 ms",
            verdict(at_most(parts.get("p99"), 1.0)),
        ],
        [
            f"edge agent memory after the run, {n} parts, {devices} devices: resident pages"
            " counted once (the agent's RSS as a whole) / PSS / RSS summed over the processes",
            f"{fmt(parts.get('once_after_mb'))} / {fmt(parts.get('pss_after_mb'))} /"
            f" {fmt(parts.get('rss_after_mb'), unit=' MB')}",
            f"bare interpreter {fmt(memory.get('bare_interpreter_rss_mb'), '.0f', ' MB')}",
            "–",
            "<= 100 MB at 1,000 devices",
            # Without root the pages cannot be told apart: PSS, which understates a little
            # (see resident_once_mb), is judged instead.
            verdict(at_most(parts.get("once_after_mb", parts.get("pss_after_mb")), 100)),
        ],
    ]


def headline_rows(r: dict[str, Outcome]) -> list[list[str]]:
    def d(key: str) -> dict[str, Any]:
        return r[key].data if key in r else {}

    edge, sim, hub, fan, bare_fan = d("edge"), d("sim"), d("hub"), d("fanout"), d("fanout_bare")
    e2e, scale, memory, red = d("e2e"), d("scale"), d("memory"), d("nodered")
    rows: list[list[str]] = []
    if edge:
        rows.append(
            [
                f"edge agent sustained ingest, {edge.get('devices', 1000):,} devices, every preset",
                fmt(edge.get("sustained"), unit=" readings/s"),
                f"bare paho subscriber {fmt(edge.get('bare'), unit=' msgs/s')}",
                fmt(edge.get("ratio"), ".2f"),
                ">= 50,000/s, ratio >= 0.9",
                verdict(at_least(edge.get("sustained"), 50_000)),
            ]
        )
        if edge.get("plain"):
            rows.append(
                [
                    "edge agent sustained ingest / a plain paho agent's (parse, running mean,"
                    " threshold, publish)",
                    f"{fmt(edge.get('sustained'))} / {fmt(edge['plain'])} readings/s",
                    f"plain paho agent {fmt(edge['plain'], unit=' readings/s')}",
                    ratio(edge.get("sustained"), edge["plain"]),
                    "–",
                    "–",
                ]
            )
        plain_p99 = edge.get("plain_p99")
        rows.append(
            [
                "reading published -> its alert received, p50 / p99 at"
                f" {fmt(edge.get('background'))}/s",
                f"{fmt(edge.get('p50'), '.2f')} / {fmt(edge.get('p99'), '.2f', ' ms')}",
                (
                    f"plain paho agent p50 / p99 {fmt(edge.get('plain_p50'), '.2f')} /"
                    f" {fmt(plain_p99, '.2f', ' ms')}"
                    if plain_p99
                    else "bare MQTT round trip: see end to end"
                ),
                ratio(edge.get("p99"), plain_p99) if plain_p99 else "–",
                "<= 1 ms",
                verdict(at_most(edge.get("p99"), 1.0)),
            ]
        )
        if edge.get("commit_p99") is not None:
            rows.append(
                [
                    "durable commit of an alert on this disk (in reading -> alert), p50 / p99",
                    f"{fmt(edge['commit_p50'], '.2f')} / {fmt(edge['commit_p99'], '.2f', ' ms')}",
                    "SQLite WAL, synchronous=FULL, idle",
                    "–",
                    "–",
                    "–",
                ]
            )
        if edge.get("inside_p99") is not None:
            rows.append(
                [
                    "of reading -> alert, the agent's own share (its /metrics: reading read ->"
                    " alert written, alarms sent by their own task) / of that, the durable"
                    " commit; p50 / p99, bucket bounds",
                    f"{fmt(edge['inside_p50'], 'g')} / {fmt(edge['inside_p99'], 'g', ' ms')};"
                    f" {fmt(edge.get('inside_commit_p50'), 'g')} /"
                    f" {fmt(edge.get('inside_commit_p99'), 'g', ' ms')}",
                    "–",
                    "–",
                    "–",
                    "–",
                ]
            )
    if parts := d("edge_parts"):
        rows += _parts_rows(parts, memory)
    for level in e2e.get("rates", []):
        bare = level["bare_round_trip"]
        stages = level["stages"]
        label = f"{level['rate']:,.0f}/s background"
        for stage, name, target in (
            ("siren", "(a) reading -> siren command at the device", 10.0),
            ("stored", "(b) reading -> alert stored at the hub (ack)", None),
            ("play", "(c) reading -> first speaker playing", 1000.0),
            ("receipt", "(c) reading -> first speaker's receipt at the hub topic", 1000.0),
            ("email", "(d) reading -> family's e-mail at the SMTP server", 1000.0),
            ("webhook", "(d) reading -> family's webhook received", 1000.0),
        ):
            p = stages[stage]
            missing = level["missing"].get(stage, 0)
            measured = (
                f"{fmt(p['p50'], '.1f')} / {fmt(p['p99'], '.1f')} / {fmt(p['max'], '.1f')} ms"
            )
            ok = None if target is None else at_most(p["p99"], target)
            if missing:
                # A sample that never arrived (15 s) is slower than any that did: when more
                # than 1 % are missing, the p99 is beyond the wait.
                total = p["n"] + missing
                measured += f"; {missing} of {total} not within 15 s"
                if missing > 0.01 * total:
                    measured = f"p99 > 15,000 ms ({missing} of {total} not within 15 s)"
                    ok = None if target is None else False
            rows.append(
                [
                    f"{name}, {label}: p50 / p99 / max",
                    measured,
                    f"bare MQTT round trip p99 {fmt(bare['p99'], '.1f')} ms",
                    ratio(p["p99"], bare["p99"]),
                    "–" if target is None else f"p99 <= {target:,.0f} ms",
                    "–" if target is None else verdict(ok),
                ]
            )
    if red.get("sustained") and edge:
        rows.append(
            [
                "edge agent sustained ingest / Node-RED's on the same load",
                f"{fmt(edge.get('sustained'))} / {fmt(red['sustained'])} readings/s",
                f"bare paho subscriber {fmt(edge.get('bare'), unit=' msgs/s')}",
                ratio(edge.get("sustained"), red["sustained"]),
                "–",
                "–",
            ]
        )
        rows.append(
            [
                f"reading -> alert p99 at {fmt(red.get('background'))}/s: edge agent / Node-RED",
                f"{fmt(edge.get('p99'), '.2f')} / {fmt(red['latency']['p99'], '.2f')} ms",
                f"bare MQTT round trip p99 {fmt(red['bare_round_trip']['p99'], '.2f')} ms",
                ratio(edge.get("p99"), red["latency"]["p99"]),
                "–",
                "–",
            ]
        )
        rows.append(
            [
                "RSS after the run: edge agent (1,000 devices, every preset) / Node-RED",
                f"{fmt(edge.get('rss_after_mb'))} / {fmt(red.get('rss_mb'))} MB",
                f"bare interpreter {fmt(memory.get('bare_interpreter_rss_mb'), '.0f', ' MB')}",
                ratio(edge.get("rss_after_mb"), red.get("rss_mb")),
                "–",
                "–",
            ]
        )
    if (fire := d("fire")) and "hub" in fire:
        local = fire.get("local", {})
        rows.append(
            [
                "fire reading (smoke + heat) -> first speaker playing the hub's CAP warning:"
                " p50 / p99 / max",
                f"{fmt(fire['hub']['p50'], '.1f')} / {fmt(fire['hub']['p99'], '.1f')} /"
                f" {fmt(fire['hub']['max'], '.1f')} ms",
                f"the gateway's own announcement p99 {fmt(local.get('p99'), '.1f')} ms",
                ratio(fire["hub"]["p99"], local.get("p99")),
                "p99 <= 1,000 ms",
                verdict(at_most(fire["hub"]["p99"], 1000.0)),
            ]
        )
    if fan:
        rows.append(
            [
                f"broadcast to {fan.get('speakers', 1000):,} speakers on {fan.get('gateways', 50)}"
                " gateways: 99 % of receipts (median of rounds)",
                fmt(fan.get("p99_median_s"), ".3f", " s"),
                f"broker's own delivery {fmt(bare_fan.get('p99_median_s'), '.3f', ' s')}",
                ratio(fan.get("p99_median_s"), bare_fan.get("p99_median_s")),
                "<= 2 s",
                verdict(at_most(fan.get("p99_worst_s"), 2.0)),
            ]
        )
    if hub:
        rows.append(
            [
                f"hub intake, PostgreSQL, {hub.get('hubs', 2)} hub processes",
                fmt(hub.get("postgres"), unit=" events/s"),
                f"bare paho subscriber {fmt(edge.get('bare'), unit=' msgs/s')}",
                ratio(hub.get("postgres"), edge.get("bare")),
                ">= 2,000/s",
                verdict(at_least(hub.get("postgres"), 2000)),
            ]
        )
    if sim:
        rows.append(
            [
                f"simulator into Mosquitto, one process, {sim.get('devices', 10000):,} devices",
                fmt(sim.get("fast"), unit=" readings/s"),
                f"bare paho publisher {fmt(sim.get('bare'), unit=' msgs/s')}",
                ratio(sim.get("fast"), sim.get("bare")),
                ">= 20,000/s",
                verdict(at_least(sim.get("fast"), 20_000)),
            ]
        )
    if (gw := scale.get("gateway")) and gw["steps"]:
        # The largest size that passed or, when none did, the smallest tried.
        last = next(
            (s for s in gw["steps"] if s["devices"] == gw["largest_passing"]), gw["steps"][0]
        )
        found = (
            fmt(gw["largest_passing"], unit=" devices")
            + ("" if gw["first_failing"] else " (search ended before a failure)")
            if gw["largest_passing"]
            else f"none of the sizes tried (at {last['devices']:,}: p99"
            f" {fmt(last['siren']['p99'], '.1f')} ms)"
        )
        rows.append(
            [
                "largest community one gateway agent serves (1 reading / 10 s, siren p99 <= 10 ms)",
                found,
                f"bare MQTT round trip p99 {fmt(last['bare_round_trip']['p99'], '.1f')} ms",
                "–",
                "(to find)",
                "–",
            ]
        )
    if hb := scale.get("hub"):
        last = next((s for s in hb["steps"] if s["gateways"] == hb["largest_passing"]), None)
        rows.append(
            [
                "largest number of gateways one hub process serves (heartbeat / 10 s, alert / 60 s"
                " each; alert -> ack p99 <= 1 s)",
                fmt(hb["largest_passing"], unit=" gateways")
                + ("" if hb["first_failing"] else " (search ended before a failure)"),
                f"bare MQTT round trip p99 {fmt(last['bare_round_trip']['p99'], '.1f')} ms"
                if last
                else "–",
                "–",
                "(to find)",
                "–",
            ]
        )
    for agent in memory.get("agents", []):
        rows.append(
            [
                f"edge agent RSS, {agent['devices']:,} devices, every preset",
                fmt(agent["rss_mb"], ".0f", " MB"),
                f"bare interpreter {fmt(memory.get('bare_interpreter_rss_mb'), '.0f', ' MB')}",
                ratio(agent["rss_mb"], memory.get("bare_interpreter_rss_mb")),
                "<= 100 MB at 1,000 devices" if agent["devices"] == 1000 else "–",
                verdict(at_most(agent["rss_mb"], 100)) if agent["devices"] == 1000 else "–",
            ]
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return out


def detail_sections(r: dict[str, Outcome]) -> list[str]:
    lines: list[str] = []
    if "e2e" in r and r["e2e"].data.get("rates"):
        e2e = r["e2e"].data
        lines += [
            "## End to end",
            "",
            f"A fresh probe gas sensor per sample publishes one Extreme reading (QoS 1) while"
            f" {e2e['devices']:,} background devices send readings from another process; the"
            f" edge agent has every preset, InfluxDB telemetry on and {e2e['speakers']} speakers;"
            " the hub runs on PostgreSQL (durable) with a policy that tells the unit's family by"
            " e-mail and webhook. Every time stamp is taken by an observer in the benchmark"
            " process, on one clock. (b) is the hub's ack, sent after the commit. The speakers"
            " answer at once (no audio), so (c) is the messaging path, not the audio.",
            "",
        ]
        rows = []
        for level in e2e["rates"]:
            for stage, p in {
                **level["stages"],
                "bare MQTT round trip": level["bare_round_trip"],
            }.items():
                missing = level["missing"].get(stage, 0)
                rows.append(
                    [
                        f"{level['rate']:,.0f}/s (offered {level['offered']:,.0f}/s)",
                        stage,
                        fmt(p["p50"], ".1f"),
                        fmt(p["p99"], ".1f"),
                        fmt(p["max"], ".1f"),
                        f"{p['n']}" + (f" ({missing} missing)" if missing else ""),
                    ]
                )
        lines += table(["background", "stage", "p50 ms", "p99 ms", "max ms", "samples"], rows)
        lines += ["", f"Edge agent RSS at the end: {fmt(e2e.get('agent_rss_mb'), '.0f')} MB.", ""]
    scale = r["scale"].data if "scale" in r else {}
    if gw := scale.get("gateway"):
        lines += ["## Scale: one gateway agent", ""]
        lines += [
            "Devices at 1 reading / 10 s; an agent (every preset) per size; 'pass' = p99 reading"
            " -> siren <= 10 ms and >= 95 % of the offered readings processed. Start-up time"
            " grows with the device count (the config is parsed with a pure-Python YAML loader);"
            " it bounds how far the search gets inside the run's time.",
            "",
        ]
        rows = [
            [
                f"{s['devices']:,}",
                f"{s['offered']:,.0f}",
                f"{s['processed']:,.0f}",
                f"{fmt(s['siren']['p50'], '.1f')} / {fmt(s['siren']['p99'], '.1f')} /"
                f" {fmt(s['siren']['max'], '.1f')}",
                fmt(s["bare_round_trip"]["p99"], ".1f"),
                f"{s['start_s']:.1f}",
                f"{s['rss_mb']:.0f}",
                "pass" if s["pass"] else "**fail**",
            ]
            for s in gw["steps"]
        ]
        lines += table(
            [
                "devices",
                "offered/s",
                "processed/s",
                "siren p50 / p99 / max ms",
                "bare MQTT p99 ms",
                "start s",
                "RSS MB",
                "",
            ],
            rows,
        )
        lines.append("")
    if hb := scale.get("hub"):
        lines += ["## Scale: one hub process", ""]
        lines += [
            f"Each gateway sends a heartbeat every {hb['heartbeat_s']:.0f} s (QoS 0, retained)"
            f" and an alert event every {hb['alert_every_s']:.0f} s (QoS 1, a new incident each),"
            f" spread evenly over a {hb['window_s']:.0f} s window; one `python -m hub` on"
            " PostgreSQL (durable). 'pass' = p99 alert -> ack <= 1 s and every alert acked.",
            "",
        ]
        rows = [
            [
                f"{s['gateways']:,}",
                f"{s['heartbeats_per_s']:,.0f}",
                f"{s['alerts_per_s']:,.1f}",
                f"{fmt(s['ack']['p50'], '.0f')} / {fmt(s['ack']['p99'], '.0f')} /"
                f" {fmt(s['ack']['max'], '.0f')}",
                str(s["unacked"]),
                fmt(s["bare_round_trip"]["p99"], ".1f"),
                "pass" if s["pass"] else "**fail**",
            ]
            for s in hb["steps"]
        ]
        lines += table(
            [
                "gateways",
                "heartbeats/s",
                "alerts/s",
                "alert -> ack p50 / p99 / max ms",
                "unacked",
                "bare MQTT p99 ms",
                "",
            ],
            rows,
        )
        lines.append("")
    memory = r["memory"].data if "memory" in r else {}
    if memory:
        lines += ["## Memory", ""]
        rows = [
            [
                f"{a['devices']:,}",
                f"{a['rss_start_mb']:.0f}",
                f"{a['rss_mb']:.0f}",
                f"{a['readings']:,.0f}",
                f"{a['start_s']:.1f}",
            ]
            for a in memory.get("agents", [])
        ]
        lines += [
            "The edge agent (every preset), once started and after every device sent two"
            " readings. Baseline: a bare interpreter,"
            f" {fmt(memory.get('bare_interpreter_rss_mb'), '.1f')} MB.",
            "",
        ]
        lines += table(["devices", "RSS started MB", "RSS after MB", "readings", "start s"], rows)
        lines += [
            "",
            "Import cost, each module alone in a fresh interpreter (time; RSS added over the"
            " bare interpreter):",
            "",
        ]
        rows = [
            [
                i["name"],
                f"`{i['module']}`",
                "not installed" if "error" in i else f"{i['seconds'] * 1000:.0f}",
                "–" if "error" in i else f"{i['added_mb']:.1f}",
            ]
            for i in memory.get("imports", [])
        ]
        lines += table(["dependency", "module", "ms", "+MB"], rows)
        lines.append("")
    if "detect" in r and r["detect"].data.get("detectors"):
        lines += ["## Detectors", "", "Cost per reading (score + learn, 5 channels):", ""]
        rows = [[n, f"{us:.1f}", f"{size:,}"] for n, us, size in r["detect"].data["detectors"]]
        lines += table(["detector", "µs / reading", "state bytes"], rows)
        lines.append("")
    if "hub" in r and r["hub"].data:
        h = r["hub"].data
        lines += [
            "## Hub intake",
            "",
            f"Alert events from ten gateways (10 % duplicates), first publish to last ack:"
            f" SQLite, 1 hub: {fmt(h.get('sqlite'), unit=' events/s')}; PostgreSQL (durable),"
            f" {h.get('hubs', '?')} hubs: {fmt(h.get('postgres'), unit=' events/s')}."
            f" Webhook notifications: SQLite {fmt(h.get('notify_sqlite'), unit='/s')},"
            f" PostgreSQL {fmt(h.get('notify_postgresql'), unit='/s')}.",
            "",
        ]
    if "fanout" in r and r["fanout"].data:
        f = r["fanout"].data
        b = r["fanout_bare"].data if "fanout_bare" in r else {}
        lines += [
            "## Broadcast fan-out",
            "",
            f"bench/broadcast_fanout.py: 99 % of receipts in median"
            f" {fmt(f.get('p99_median_s'), '.3f', ' s')} (worst"
            f" {fmt(f.get('p99_worst_s'), '.3f', ' s')}), 100 % in median"
            f" {fmt(f.get('p100_median_s'), '.3f', ' s')} (worst"
            f" {fmt(f.get('p100_worst_s'), '.3f', ' s')}); the first receipt in median"
            f" {fmt(f.get('first_receipt_median_s'), '.3f', ' s')}. The broker's own delivery of"
            " the same"
            " three hops with bare paho clients that only forward (bench/fanout_baseline.py):"
            f" 99 % in median {fmt(b.get('p99_median_s'), '.3f', ' s')}, 100 % in median"
            f" {fmt(b.get('p100_median_s'), '.3f', ' s')}.",
            "",
        ]
        fire = r["fire"].data if "fire" in r else {}
        if fire:
            lines += [
                "bench/fire_to_speaker.py: a fire reading (smoke, then the heat reading that"
                " confirms it) to the play commands at the speaker, through the real edge agent"
                " and hub (in one process, SQLite):",
                "",
            ]
            rows = [
                [
                    stage,
                    str(p["n"]),
                    fmt(p["p50"], ".1f"),
                    fmt(p["p99"], ".1f"),
                    fmt(p["max"], ".1f"),
                ]
                for stage, p in fire.items()
            ]
            lines += table(["stage", "rounds", "p50 ms", "p99 ms", "max ms"], rows)
        lines.append("")
    red = r["nodered"].data if "nodered" in r else {}
    if "nodered" in r and not red.get("rates"):
        lines += [
            "## Side by side: Node-RED",
            "",
            f"Not measured in this run: {red.get('missing', 'see the output below')}.",
            "",
        ]
    if red.get("rates"):
        edge = r["edge"].data if "edge" in r else {}
        lines += [
            "## Side by side: Node-RED",
            "",
            f"Node-RED {red.get('version')} (bench/nodered.py): `mqtt in` (the same reading"
            " topics, JSON) -> `function` (a running mean per device and metric, a threshold on"
            " gas) -> `mqtt out`, on its own Mosquitto with the same settings, fed the same"
            " 1,000 devices' readings from another process. It does far less than the agent (no"
            " rule language, holds, clears, outbox or device health).",
            "",
        ]
        rows = [
            [f"{x['rate']:,.0f}", f"{x['offered']:,.0f}", f"{x['processed']:,.0f}"]
            for x in red["rates"]
        ]
        lines += table(["rate", "offered/s", "Node-RED processed/s"], rows)
        p = red["latency"]
        lines += [
            "",
            f"Node-RED: sustained {fmt(red.get('sustained'))} readings/s (edge agent"
            f" {fmt(edge.get('sustained'))}); reading -> alert at"
            f" {fmt(red.get('background'))}/s p50 {fmt(p['p50'], '.2f')} ms, p99"
            f" {fmt(p['p99'], '.2f')} ms (edge agent p99 {fmt(edge.get('p99'), '.2f')} ms; bare"
            f" MQTT round trip p99 {fmt(red['bare_round_trip']['p99'], '.2f')} ms); RSS"
            f" {fmt(red.get('rss_start_mb'))} MB started, {fmt(red.get('rss_mb'))} MB after"
            f" (edge agent {fmt(edge.get('rss_after_mb'))} MB).",
            "",
        ]
    if "telemetry" in r and r["telemetry"].data:
        labels = [
            ("baseline (no flush)", "baseline"),
            ("whole flush in a thread", "whole flush in a thread (before)"),
            ("lines on the loop (the agent)", "lines made on the loop, 100 a turn (now)"),
        ]
        rows = [
            [f"{int(n):,}"]
            + [
                f"{fmt(by[key][1], '.2f')} / {fmt(by[key][2], '.2f')}" if key in by else "–"
                for key, _ in labels
            ]
            for n, by in r["telemetry"].data["devices"].items()
        ]
        lines += [
            "## Telemetry flush and the agent's loop",
            "",
            "A timer on the agent's loop due every 0.5 ms, and how late it fires (ms) while"
            " telemetry for N devices is flushed (bench/telemetry_stall.py; InfluxDB absent, so"
            " the CPU work is measured). The baseline is the same loop with no flush.",
            "",
            *table(["devices", *(f"{title} p99 / max" for _, title in labels)], rows),
            "",
        ]
    if "sim" in r and r["sim"].data:
        s = r["sim"].data
        lines += [
            "## Simulator",
            "",
            f"One process pinned to one core: engine alone {fmt(s.get('engine'), unit='/s')};"
            f" into Mosquitto as fast as possible {fmt(s.get('fast'), unit='/s')}; paced at"
            f" {fmt(s.get('paced_target'), unit='/s')}: {fmt(s.get('paced'), unit='/s')}; a bare"
            f" paho publisher loop {fmt(s.get('bare'), unit=' msgs/s')}.",
            "",
        ]
    return lines


def render(
    results: dict[str, Outcome],
    info: dict[str, str],
    quick: bool,
    began: datetime,
    took_s: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    lines = [
        "# Performance",
        "",
        f"Written by `bench/run{' --quick' if quick else ''}` on {began:%Y-%m-%d %H:%M} UTC in"
        f" {took_s / 60:.1f} minutes. Re-run it to refresh every figure:"
        " `.venv/bin/python bench/run` (about 10 minutes on 2 cores). Each benchmark starts its"
        " own Mosquitto, PostgreSQL and InfluxDB on free ports and runs alone.",
        "",
    ]
    if quick:
        lines += ["**Quick mode: tiny sizes, to check that the benchmarks run. Not figures.**", ""]
    lines += [
        "Every figure is beside a baseline measured in the same run on the same broker: a bare"
        " paho-mqtt subscriber for ingest, a bare publish -> subscribe round trip for latency, the"
        " broker's own delivery of the same hops for fan-out. The ratio is figure / baseline."
        " When the machine is busy both move together; compare ratios between runs.",
        "",
        f"Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in load[0])};"
        f" at the end: {', '.join(f'{x:.2f}' for x in load[1])}.",
        "",
        "## Machine",
        "",
        *table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        "## Headline figures",
        "",
        *table(
            ["figure", "measured", "baseline, same run", "ratio", "target", "verdict"],
            headline_rows(results),
        ),
        "",
        "Targets: issue 5 (edge), 3 (simulator), 7 (hub), 8 (broadcast), 13 (end to end: p99"
        " (a) <= 10 ms, (c) and (d) <= 1 s; NFPA 72 allows 10 s for annunciation).",
        "",
        *detail_sections(results),
        "## Not measured here",
        "",
        *(
            []
            if "nodered" in results and results["nodered"].data.get("rates")
            else [
                "- Node-RED side by side (issue 13): not measured in this run (Node-RED is not"
                " installed: `npm install -g node-red`)."
            ]
        ),
        "- A Raspberry Pi 4 core runs Python roughly 5-8 times slower than this machine"
        " (estimate): divide rates and multiply the agent's latencies accordingly.",
        "",
        "## Runs",
        "",
        *table(
            ["benchmark", "command", "seconds", "result"],
            [
                [
                    o.bench.title,
                    f"`bench/{o.bench.script} "
                    f"{' '.join(o.bench.quick if quick else o.bench.full)}`",
                    f"{o.seconds:.0f}",
                    "ok" if o.ok else f"**failed ({o.returncode})**",
                ]
                for o in results.values()
            ],
        ),
        "",
    ]
    for outcome in results.values():
        lines += [
            "<details>",
            f"<summary>{outcome.bench.title}: output</summary>",
            "",
            "```",
            *outcome.output[-120:],
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def save(
    path: Path,
    results: dict[str, Outcome],
    info: dict[str, str],
    quick: bool,
    began: datetime,
    took_s: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> None:
    """Every figure and output of the run, so that the report can be written again from it."""
    runs = {
        key: {"returncode": o.returncode, "seconds": o.seconds, "output": o.output, "data": o.data}
        for key, o in results.items()
    }
    document = {
        "machine": info,
        "quick": quick,
        "began": began.isoformat(),
        "took_s": took_s,
        "load": load,
        "runs": runs,
    }
    path.write_text(json.dumps(document, indent=1, default=str))


def load_saved(
    path: Path,
) -> tuple[
    dict[str, Outcome],
    dict[str, str],
    bool,
    datetime,
    float,
    tuple[tuple[float, ...], tuple[float, ...]],
]:
    document = json.loads(path.read_text())
    by_key = {b.key: b for b in BENCHES}
    results = {
        key: Outcome(by_key[key], run["returncode"], run["seconds"], run["output"], run["data"])
        for key, run in document["runs"].items()
        if key in by_key
    }
    before, after = document["load"]
    return (
        results,
        document["machine"],
        document["quick"],
        datetime.fromisoformat(document["began"]),
        document["took_s"],
        (tuple(before), tuple(after)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark; write the report.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it all runs")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown to write")
    parser.add_argument(
        "--parallel",
        type=int,
        default=0,
        help="benchmarks at once (default: 1, or 4 with --quick; figures need 1)",
    )
    parser.add_argument("--render", type=Path, help="only write the report from this JSON")
    args = parser.parse_args()
    if args.render is not None:
        args.out.write_text(render(*load_saved(args.render)))
        say(f"wrote {args.out} from {args.render}")
        return 0
    chosen = BENCHES
    if args.only:
        wanted = {s.strip() for s in args.only.split(",")}
        unknown = wanted - set(SECTIONS)
        if unknown:
            parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; use {SECTIONS}")
        chosen = [b for b in BENCHES if b.key in wanted]
    parallel = args.parallel or (4 if args.quick else 1)
    # Started in the background by a shell, SIGINT arrives ignored, and the benchmarks would
    # inherit that: they could then not be interrupted into cleaning up their servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timeout = 180.0 if args.quick else 420.0
    began_at = datetime.now(UTC)
    began = time.perf_counter()
    load_before = os.getloadavg()
    info = machine()
    say("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    results: dict[str, Outcome] = {}
    with (
        tempfile.TemporaryDirectory(prefix="anmin-bench-run-") as tmp,
        concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool,
    ):
        # The slowest first, so that in parallel the run ends soonest (one at a time: as listed).
        order = sorted(chosen, key=lambda b: -SLOW.get(b.key, 0)) if parallel > 1 else chosen
        submitted = {
            b.key: pool.submit(run_bench, b, args.quick, timeout, Path(tmp)) for b in order
        }
        futures = {b.key: submitted[b.key] for b in chosen}
        try:
            for key, future in futures.items():
                results[key] = future.result()
        except KeyboardInterrupt:
            stopping.set()
            for process in list(running):
                process.send_signal(signal.SIGINT)
            say("\ninterrupted: stopping the running benchmark; no report written")
            return 130
    took = time.perf_counter() - began
    load = (load_before, os.getloadavg())
    save(args.out.with_suffix(".json"), results, info, args.quick, began_at, took, load)
    text = render(results, info, args.quick, began_at, took, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    failed = [o.bench.key for o in results.values() if not o.ok]
    for key in failed:
        # Last, so that a caller keeping only the tail of the output (the smoke test) sees why.
        say(f"\n== {results[key].bench.title} FAILED; its last lines:")
        for line in results[key].output[-30:]:
            say(f"[{key}] {line[:200]}")
    failures = f"; FAILED: {', '.join(failed)}" if failed else ""
    say(f"\nwrote {args.out} in {took / 60:.1f} minutes{failures}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
