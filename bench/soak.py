"""Soak: the sample community at 10x real time for N minutes, the whole system in processes.

One hub (``python -m hub``, PostgreSQL), one edge agent per gateway (``anmin edge run``, every
rule preset but the ones that need real time, telemetry to influxd), the simulator replaying
the sample community pass after pass (a new seed each pass), the notification receivers.
Every ``--sample-s`` seconds it records each process's RSS and each gateway's outbox depth
(from its heartbeat). At the end it prints:

- RSS per process: first, last, peak, and the slope of a least-squares line over the second
  half of the run (after warm-up) in MB/hour; "flat" if that slope would grow the process by
  less than max(2 MB, 5 %) over the run;
- outbox depth: peak, last, slope; "flat" if it ends at 0;
- error log lines (ERROR, CRITICAL, Traceback) per process;
- per pass and incident kind, the expected alerts detected (raised in the pass, or still
  standing from an earlier one: a standing alarm is not raised again).

    .venv/bin/python bench/soak.py                 # 30 minutes (5 passes of the hour)
    .venv/bin/python bench/soak.py --minutes 6     # one pass

Not in CI: it prints figures, it asserts nothing. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bus.broker import Mosquitto  # noqa: E402
from bus.influx import Influxd, influxd_binary  # noqa: E402
from hub.store import AlertRecord  # noqa: E402
from rules.ruleset import preset_names  # noqa: E402
from tests.faults.checker import SEVERITY_RANK, Run, at_place  # noqa: E402
from tests.faults.system import FaultSystem  # noqa: E402
from tests.integration.hub.postgres import PostgresCluster  # noqa: E402
from tests.integration.hub.receivers import SmtpSink, WebhookReceiver  # noqa: E402
from wire import Severity  # noqa: E402

SAMPLE = ROOT / "firmware-sim" / "scenarios" / "sample-community.yaml"
ERROR_MARKS = (" ERROR ", " CRITICAL ", "Traceback")


@dataclass
class Series:
    points: list[tuple[float, float]] = field(default_factory=list)  # (minutes, value)

    def add(self, minute: float, value: float) -> None:
        self.points.append((minute, value))

    def slope_per_hour(self, *, second_half: bool = True) -> float:
        points = self.points[len(self.points) // 2 :] if second_half else self.points
        if len(points) < 3:
            return 0.0
        xs, ys = zip(*points, strict=True)
        return statistics.linear_regression(xs, ys).slope * 60.0


def rss_mb(pid: int | None) -> float:
    """Resident set size from /proc (0 when the process is gone)."""
    if pid is None:
        return 0.0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def error_lines(path: Path) -> int:
    if not path.exists():
        return 0
    text = path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if any(m in line for m in ERROR_MARKS))


def detected(run: Run, alerts: list[AlertRecord], began: datetime) -> Counter[tuple[str, bool]]:
    """(kind, detected?) per expected alert of one pass."""
    out: Counter[tuple[str, bool]] = Counter()
    for incident in run.truth.incidents:
        for expect in incident.expect:
            place = [a for a in alerts if at_place(expect, incident, a)]
            strong = [
                a
                for a in place
                if a.phase in ("raised", "updated")
                and SEVERITY_RANK[Severity(a.severity)] >= SEVERITY_RANK[expect.severity]
            ]
            now = [a for a in strong if a.received_at >= began]
            before = [a for a in place if a.received_at < began]
            standing = bool(before) and max(before, key=lambda a: a.ts).phase != "cleared"
            out[(expect.kind, bool(now) or (standing and bool(strong)))] += 1
    return out


async def soak(minutes: float, speed: float, sample_s: float, scenario: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="anmin-soak-"))
    mosquitto = Mosquitto(data_dir=work / "mosquitto")
    mosquitto.start()
    cluster = PostgresCluster()
    cluster.start()
    smtp, webhook = SmtpSink(), WebhookReceiver()
    smtp.start()
    webhook.start()
    influxd = Influxd(work / "influxd") if influxd_binary() else None
    if influxd is not None:
        influxd.start()
        influxd.query("CREATE DATABASE anmin")
    telemetry = (
        ""
        if influxd is None
        else f"telemetry: {{url: '{influxd.url}', database: anmin, interval_s: 10}}\n"
    )
    # As the community demo: one CO profile; device-health reports the simulator's clocks
    # running ahead of the gateways' at speeds above 1 as skew.
    rules = tuple(n for n in preset_names() if n not in {"co-en50291", "device-health"})
    system = FaultSystem(
        "soak",
        work,
        mosquitto.broker,
        cluster.create_database("soak"),
        smtp,
        webhook,
        scenario=scenario,
        speed=speed,
        rules=rules,
        edge_extra=lambda gateway: telemetry,
    )
    rss: dict[str, Series] = defaultdict(Series)
    outbox: dict[str, Series] = defaultdict(Series)
    passes: list[tuple[Run, datetime]] = []
    try:
        await system.start(hubs=1)
        began = time.monotonic()
        deadline = began + minutes * 60
        seed = 7
        while time.monotonic() < deadline:
            run = await system.play(seed=seed)
            passes.append((run, run.played_at))
            print(f"pass {len(passes)} (seed {seed}) playing", flush=True)
            while system.sim.running():
                minute = (time.monotonic() - began) / 60
                processes = {
                    **{h.name: h.process for h in system.hubs},
                    **{g: gw.process.process for g, gw in system.gateways.items()},
                }
                for name, process in processes.items():
                    rss[name].add(minute, rss_mb(process.pid if process else None))
                for gateway, (_, beat) in system.watcher.heartbeats.items():
                    outbox[gateway].add(minute, beat.outbox_depth)
                await asyncio.sleep(sample_s)  # the sampling period
            seed += 1
        await asyncio.sleep(30)  # the last pass's alarms reach the hub (then it is measured)
        took = (time.monotonic() - began) / 60
        alerts = system.store.alerts(limit=1_000_000)
        errors = {h.name: error_lines(h.log_path) for h in system.hubs}
        errors |= {g: error_lines(gw.process.log_path) for g, gw in system.gateways.items()}
        errors["sim"] = error_lines(system.sim.log_path)
    finally:
        await system.close()
        smtp.stop()
        webhook.stop()
        if influxd is not None:
            influxd.close()
        cluster.close()
        mosquitto.close()

    print(
        f"\nsoak: {scenario.name} at {speed:g}x for {took:.1f} min, {len(passes)} passes, "
        f"{len(alerts)} alert events, {smtp.count()} e-mails, {webhook.count()} webhooks"
    )
    print("\nRSS (MB)        first   last   peak  slope MB/h (2nd half)  flat")
    for name, series in sorted(rss.items()):
        values = [v for _, v in series.points if v > 0]
        if not values:
            continue
        slope = series.slope_per_hour()
        flat = abs(slope) * took / 60 < max(2.0, 0.05 * statistics.mean(values))
        print(
            f"{name:<14} {values[0]:6.1f} {values[-1]:6.1f} {max(values):6.1f} "
            f"{slope:+12.1f}            {'yes' if flat else 'NO'}"
        )
    print("\noutbox depth    peak  last  slope/h  flat")
    for name, series in sorted(outbox.items()):
        values = [v for _, v in series.points]
        flat = values[-1] == 0
        print(
            f"{name:<14} {max(values):5.0f} {values[-1]:5.0f} "
            f"{series.slope_per_hour(second_half=False):+8.1f}  {'yes' if flat else 'NO'}"
        )
    print(f"\nerror log lines: {errors}")
    for n, (run, at) in enumerate(passes, 1):
        counts = detected(run, alerts, at - timedelta(seconds=2))
        kinds = sorted({k for k, _ in counts})
        summary = ", ".join(
            f"{k} {counts[(k, True)]}/{counts[(k, True)] + counts[(k, False)]}" for k in kinds
        )
        total = sum(counts.values())
        print(
            f"pass {n}: detected {sum(v for (k, d), v in counts.items() if d)}/{total}: {summary}"
        )
    print(f"\nwork folder (logs): {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--scenario", type=Path, default=SAMPLE)
    args = parser.parse_args()
    asyncio.run(soak(args.minutes, args.speed, args.sample_s, args.scenario))


if __name__ == "__main__":
    main()
