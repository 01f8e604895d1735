"""One edge agent with 1,000 devices against two agents of 500 each (issue 5, by hand).

The same load, presets and broker as ``bench/edge_throughput.py``, and its bare paho
subscriber as the baseline in the same run. The two agents are two gateways' agents on one
machine (``gw-a`` and ``gw-b``, each its own config, data and identity), the devices split
between them by flat (device i is in unit i % 50: units 0-24 and 25-49), so that every rule
about a flat sees all of it, as a building would be split. Turns alternate, so each pair runs
in the same hour. Prints the rate each sustains (the best processed over the offered rates),
its ratio to the baseline, and memory after the run: RSS, and PSS (pages shared between the
processes counted once). Asserts nothing.

Usage: .venv/bin/python bench/edge_shards.py [--rates 40000,50000,60000,70000] [--turns 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/x.py

from bench import edge_throughput as throughput
from bench.common import GATEWAY, SITE
from bus.broker import Mosquitto, free_port
from wire import topics

DEVICES = 1000


def _config(port: int, data: Path, metrics_port: int, gateway: str, owns: set[int]) -> str:
    """edge_throughput's config, as ``gateway`` with the devices numbered in ``owns``."""
    out = []
    for line in throughput.config(port, data, metrics_port, DEVICES).splitlines():
        if line.startswith("gateway:"):
            line = f"gateway: {gateway}"
        elif line.startswith("  - {id: d") and int(line[len("  - {id: d") :][:4]) not in owns:
            continue
        elif line.startswith(f"  - {{id: {throughput.PROBE}") and 0 not in owns:
            continue  # the probe (never sent here) with the agent of unit 0's flat
        out.append(line)
    return "\n".join(out) + "\n"


class Agent:
    """``anmin edge run`` in its own process, as the throughput benchmark runs it."""

    def __init__(self, port: int, directory: Path, gateway: str, owns: set[int]) -> None:
        directory.mkdir(parents=True)
        self.metrics_port = free_port()
        path = directory / "edge.yaml"
        path.write_text(_config(port, directory / "data", self.metrics_port, gateway, owns))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "anmin", "edge", "run", "--config", str(path)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.processed()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def processed(self) -> float:
        return throughput.processed(self.metrics_port)

    def memory_mb(self) -> tuple[float, float]:
        """RSS and PSS in MB."""
        rss = throughput.rss_mb(self.process.pid)
        pss = 0.0
        rollup = Path(f"/proc/{self.process.pid}/smaps_rollup")
        for line in rollup.read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
        return rss, pss

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class SplitLoad(throughput.Load):
    """The throughput benchmark's load, each device's readings on its own agent's topic."""

    def __init__(self, port: int, gateways: Callable[[int], str]) -> None:
        super().__init__(port, DEVICES)
        self.topics = [
            topics.reading(SITE, gateways(i), f"d{i:04d}").encode() for i in range(DEVICES)
        ]


def _run(label: str, port: int, agents: list[Agent], load: SplitLoad, rates: list[float]) -> float:
    best = 0.0
    for rate in rates:
        before = sum(agent.processed() for agent in agents)
        began = time.perf_counter()
        offered = load.run(rate, 5.0)
        done = (sum(agent.processed() for agent in agents) - before) / (time.perf_counter() - began)
        best = max(best, done)
        print(f"{label}: offered {offered:>9,.0f}/s  processed {done:>9,.0f}/s", flush=True)
    load.close()
    memory = [agent.memory_mb() for agent in agents]
    rss, pss = sum(m[0] for m in memory), sum(m[1] for m in memory)
    print(f"{label}: RSS {rss:.0f} MB, PSS {pss:.0f} MB after the run", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="40000,50000,60000,70000")
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    first = {i for i in range(DEVICES) if i % 50 < 25}  # gw-a's flats; gw-b has the rest
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(persistence=False) as broker:
        port = broker.port
        baseline = throughput.bare_subscriber_rate(port, 200_000)
        print(f"bare paho subscriber on this broker: {baseline:,.0f} msgs/s", flush=True)
        for turn in range(args.turns):
            one = Agent(port, Path(tmp) / f"one-{turn}", GATEWAY, set(range(DEVICES)))
            try:
                single = _run("one agent", port, [one], SplitLoad(port, lambda i: GATEWAY), rates)
            finally:
                one.stop()
            shards = [
                Agent(port, Path(tmp) / f"a-{turn}", "gw-a", first),
                Agent(port, Path(tmp) / f"b-{turn}", "gw-b", set(range(DEVICES)) - first),
            ]
            try:
                load = SplitLoad(port, lambda i: "gw-a" if i in first else "gw-b")
                split = _run("two agents", port, shards, load, rates)
            finally:
                for agent in shards:
                    agent.stop()
            print(
                f"turn {turn + 1}: one agent {single:,.0f} readings/s ({single / baseline:.2f}"
                f" of bare paho); two agents {split:,.0f} readings/s ({split / baseline:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
