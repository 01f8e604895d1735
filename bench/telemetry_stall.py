"""How late the edge agent's loop wakes while telemetry is flushed (issue 5).

Every ``flush_s`` the agent writes the ended windows of every device to InfluxDB. Making line
protocol is Python work (~10 µs a point in influxdb_client). A worker thread doing it holds the
GIL from the loop that carries alarms for up to ``sys.getswitchinterval()`` (5 ms) at a time.
The agent now takes the points and makes the lines on its loop, a slice at a time
(``Telemetry.encode``), and only waits for the disk and InfluxDB in a thread.

A task on the loop wakes every 0.5 ms and notes how late it woke, while telemetry for N devices
is flushed over and over: the baseline (no flush), the whole flush in a thread (the old way),
and the agent's way. InfluxDB is not running (the writes fail at once and are buffered), so
what is measured is the CPU work, not the network.

    .venv/bin/python bench/telemetry_stall.py [--devices 1000,10000] [--flushes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/x.py

from bench.common import write_json
from bus.broker import free_port
from edge import parse
from edge.config import DeviceConfig
from edge.telemetry import Telemetry
from wire import Reading

PERIOD_S = 0.0005
T0 = datetime(2026, 11, 29, tzinfo=UTC)


def telemetry(directory: Path, devices: int) -> tuple[Telemetry, list[DeviceConfig]]:
    lines = [
        "site: s1",
        "gateway: gw-1",
        "building: b1",
        f"telemetry: {{url: 'http://127.0.0.1:{free_port()}', retention_days: 0}}",
        "devices:",
        *(f"  - {{id: gas-{i}, kind: gas, unit: '{i % 50}'}}" for i in range(devices)),
    ]
    config = parse("\n".join(lines) + "\n", source="bench")
    return Telemetry(config, directory), list(config.devices)


def fill(tel: Telemetry, devices: list[DeviceConfig], at: datetime) -> None:
    """One reading from every device, in the window that starts at ``at``."""
    for i, device in enumerate(devices):
        reading = Reading(device=device.id, seq=1, ts=at, values={"gas_lel": i % 7 / 2})
        tel.reading(device, "b1", reading, at)


async def lags_while(
    fill: Callable[[datetime], None], flush: Callable[[datetime], Awaitable[object]], flushes: int
) -> list[float]:
    """How late (ms) a 0.5 ms timer fires while ``flush`` runs, ``flushes`` times, each after
    ``fill`` (not measured)."""
    lags: list[float] = []
    done = asyncio.Event()
    measuring = [False]

    async def ticker() -> None:
        while not done.is_set():
            began, counted = time.perf_counter(), measuring[0]
            await asyncio.sleep(PERIOD_S)
            if counted or measuring[0]:  # a sleep that overlaps a flush
                lags.append((time.perf_counter() - began - PERIOD_S) * 1000)

    task = asyncio.create_task(ticker())
    for n in range(flushes):
        at = T0 + timedelta(seconds=20 * (n + 1))
        fill(at)  # not measured: in the agent readings come one by one, between turns
        await asyncio.sleep(0.002)
        measuring[0] = True
        await flush(at)
        measuring[0] = False
        await asyncio.sleep(0.002)  # a sleep begun in the flush ends before the next fill
    done.set()
    await task
    return lags


def summary(lags: list[float]) -> tuple[float, float, float]:
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


async def measure(devices: int, flushes: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as directory:
        tel, configs = telemetry(Path(directory), devices)

        def readings(at: datetime) -> None:
            fill(tel, configs, at)

        async def idle(at: datetime) -> None:
            await asyncio.sleep(0.02)  # the same readings, and no flush

        async def in_a_thread(at: datetime) -> None:
            await asyncio.to_thread(tel.flush, at + timedelta(seconds=10))

        async def on_the_loop(at: datetime) -> None:
            now = at + timedelta(seconds=10)
            body, count = await tel.encode(tel.take(now))
            await asyncio.to_thread(tel.send, body, count, now)

        results = {}
        for label, flush in (
            ("baseline (no flush)", idle),
            ("whole flush in a thread", in_a_thread),
            ("lines on the loop (the agent)", on_the_loop),
        ):
            results[label] = summary(await lags_while(readings, flush, flushes))
            tel.take(T0 + timedelta(days=1), everything=True)  # what is left open
        tel.close()
    base = results["baseline (no flush)"][1]
    print(f"{devices:,} devices, {flushes} flushes; the loop's wake-up lag, ms:")
    for label, (p50, p99, worst) in results.items():
        print(
            f"  {label:32} p50 {p50:6.2f}  p99 {p99:6.2f}  max {worst:6.2f}"
            f"  (p99 / baseline {p99 / base:.1f})"
        )
    return {label: list(figures) for label, figures in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000,10000")
    parser.add_argument("--flushes", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here (bench/run)")
    args = parser.parse_args()
    print(f"switch interval {sys.getswitchinterval() * 1000:.0f} ms; timer every 0.5 ms")
    figures = {
        str(devices): asyncio.run(measure(devices, args.flushes))
        for devices in (int(d) for d in args.devices.split(","))
    }
    write_json(args.json, {"devices": figures})


if __name__ == "__main__":
    main()
