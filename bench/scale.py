"""How big a community one gateway agent serves, and how many gateways one hub process serves
(issue 13). Real Mosquitto, real agent and hub processes, PostgreSQL (durable) for the hub.

Gateway: devices reading once every 10 s, so N devices offer N/10 readings/s (from another
process). For each N an agent (every preset, N devices) is started, the load runs, and fresh
probe gas sensors time reading -> ``siren_on`` at the device. N passes when p99 <= 10 ms and the
agent processes >= 95 % of what is offered. N doubles until it fails, then the gap between the
last pass and the first failure is bisected once.

Hub: G simulated gateways, each sending what an agent sends: a heartbeat every 10 s (QoS 0,
retained) and, for a busy community, one alert event every 60 s (QoS 1, a new cause each: a new
incident). One hub process (``python -m hub``) on PostgreSQL. G passes when the p99 from an
alert's publish to the hub's ack (sent after the commit) is <= 1 s and every alert is acked.
G doubles until it fails.

Baseline in the same run: a bare paho publish -> subscribe round trip on the same broker under
the same load.

    .venv/bin/python bench/scale.py [--part gateway|hub|both] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho

from bench.common import (
    GATEWAY,
    SITE,
    BareRoundTrip,
    EdgeAgent,
    Load,
    paho_client,
    percentiles,
    probe_id,
    reading_payload,
    write_json,
)
from bus.broker import Mosquitto
from tests.integration.hub.multihub import HubProcess
from tests.integration.hub.postgres import PostgresCluster
from wire import Ack, AlertEvent, Codec, Heartbeat, Phase, Severity, topics, uuid7
from wire.topics import Channel

SIREN_P99_MS = 10.0
KEEP_UP = 0.95
ACK_P99_MS = 1000.0
HEARTBEAT_S = 10.0
ALERT_EVERY_S = 60.0
HUB_SITE = "scale"


# -- gateway ------------------------------------------------------------------------------------


class SirenProbe:
    """Publishes an Extreme reading from a fresh probe sensor and times its ``siren_on``."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()

        def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
            at = time.perf_counter()
            if b'"siren_on"' in m.payload:
                device = m.topic.split("/")[-2]
                with self.changed:
                    self.arrived.setdefault(device, at)
                    self.changed.notify_all()

        self.watch = paho_client("bench-siren-watch")
        self.watch.on_message = on_message
        self.watch.connect("127.0.0.1", port)
        self.watch.subscribe(topics.device_channel_filter(SITE, GATEWAY, Channel.CMD), qos=1)
        self.watch.loop_start()
        self.sensor = paho_client("bench-siren-sensor")
        self.sensor.connect("127.0.0.1", port)
        self.sensor.loop_start()
        time.sleep(0.3)  # a benchmark, not a test: let the subscription settle

    def sample(self, i: int) -> float | None:
        device = probe_id(i)
        began = time.perf_counter()
        self.sensor.publish(
            topics.reading(SITE, GATEWAY, device),
            reading_payload(device, 1, "gas_lel", 80.0),
            qos=1,
        )
        deadline = time.monotonic() + 5
        with self.changed:
            while device not in self.arrived and time.monotonic() < deadline:
                self.changed.wait(deadline - time.monotonic())
            at = self.arrived.get(device)
        return None if at is None else (at - began) * 1000

    def close(self) -> None:
        for client in (self.watch, self.sensor):
            client.disconnect()
            client.loop_stop()


def gateway_step(port: int, devices: int, probes: int, warmup_s: float) -> dict[str, Any]:
    rate = devices / 10
    with EdgeAgent(port, devices=devices, interval_s=10, probes=probes) as agent:
        start_rss = agent.rss_mb()
        probe = SirenProbe(port)
        bare = BareRoundTrip(port)
        sirens: list[float] = []
        bare_ms: list[float] = []
        lost = 0
        try:
            with Load(port, devices, rate) as load:
                time.sleep(warmup_s)
                before, began = agent.processed(), time.perf_counter()
                for i in range(probes):
                    ms = probe.sample(i)
                    if ms is None:
                        lost += 1
                        if lost >= 3:  # a failed step either way: do not wait out the rest
                            break
                    else:
                        sirens.append(ms)
                    rt = bare.sample()
                    if rt is not None:
                        bare_ms.append(rt)
                    time.sleep(0.02)
                # The background's rate: the probes' own readings do not count.
                done = agent.processed() - before - probes
                processed = done / (time.perf_counter() - began)
                offered = load.offered()
        finally:
            probe.close()
            bare.close()
        p = percentiles(sirens)
        ok = lost == 0 and p["p99"] <= SIREN_P99_MS and processed >= KEEP_UP * offered
        figures: dict[str, Any] = {
            "devices": devices,
            "rate": rate,
            "offered": offered,
            "processed": processed,
            "siren": p,
            "lost": lost,
            "bare_round_trip": percentiles(bare_ms),
            "start_s": agent.started_s,
            "rss_mb": agent.rss_mb(),
            "start_rss_mb": start_rss,
            "pass": ok,
        }
    print(
        f"  {devices:>7,} devices ({rate:,.0f}/s offered {offered:,.0f}/s, processed"
        f" {processed:,.0f}/s): siren p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms"
        f" max {p['max']:.1f} ms; bare MQTT p99 {figures['bare_round_trip']['p99']:.1f} ms;"
        f" agent started in {agent.started_s:.1f} s, RSS {figures['rss_mb']:.0f} MB:"
        f" {'pass' if ok else 'FAIL'}",
        flush=True,
    )
    return figures


def gateway_scale(
    counts: list[int], probes: int, warmup_s: float, bisect: bool, budget_s: float
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    began = time.monotonic()
    with Mosquitto(persistence=False) as broker:
        best: int | None = None
        failed: int | None = None
        for n in counts:
            step = gateway_step(broker.port, n, probes, warmup_s)
            steps.append(step)
            if not step["pass"]:
                failed = n
                break
            best = n
            if time.monotonic() - began > budget_s:
                print("  (time budget spent: stopping the search here)")
                break
        # The first size failed: halve it (at most three times) to find one that passes.
        n = counts[0]
        for _ in range(3 if best is None and bisect else 0):
            n //= 2
            step = gateway_step(broker.port, n, probes, warmup_s)
            steps.append(step)
            if step["pass"]:
                best = n
                break
            failed = n
        if bisect and best is not None and failed is not None:
            middle = int(math.sqrt(best * failed) / 1000) * 1000 or (best + failed) // 2
            if best < middle < failed:
                step = gateway_step(broker.port, middle, probes, warmup_s)
                steps.append(step)
                if step["pass"]:
                    best = middle
                else:
                    failed = middle
    steps.sort(key=lambda step: int(step["devices"]))
    return {"steps": steps, "largest_passing": best, "first_failing": failed}


# -- hub ------------------------------------------------------------------------------------------


class GatewayFleet:
    """G gateways' heartbeats and alerts from one client, paced; times each alert's ack."""

    def __init__(self, port: int) -> None:
        self.codec = Codec()
        self.sent_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.rng = random.Random(13)

        def on_ack(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
            at = time.perf_counter()
            ids = self.codec.decode(bytes(m.payload), Ack, datetime.now(UTC)).ids
            with self.lock:
                for event_id in ids:
                    self.acked_at.setdefault(event_id, at)

        self.client = paho_client("bench-fleet")
        self.client.max_queued_messages_set(0)
        self.client.on_message = on_ack
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics.hub_filter(Channel.ACK), qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def heartbeat(self, gateway: str) -> None:
        beat = Heartbeat(site=HUB_SITE, gateway=gateway, state="online", ts=datetime.now(UTC))
        self.client.publish(
            topics.gateway_topic(Channel.HEARTBEAT, HUB_SITE, gateway),
            self.codec.encode(beat),
            qos=0,
            retain=True,
        )

    def alert(self, gateway: str, n: int) -> None:
        now = datetime.now(UTC)
        event = AlertEvent(
            id=uuid7(int(now.timestamp() * 1000), self.rng.getrandbits),
            key=f"flood:{gateway}-{n}",
            phase=Phase.RAISED,
            severity=Severity.SEVERE,
            kind="flood",
            rule="flood",
            site=HUB_SITE,
            gateway=gateway,
            device=f"flood-{n}",
            building="b1",
            unit="u1",
            ts=now,
            evidence={"water_level_cm": 3.0},
            message="water 3 cm",
        )
        with self.lock:
            self.sent_at[event.id] = time.perf_counter()
        self.client.publish(
            topics.gateway_topic(Channel.ALERT, HUB_SITE, gateway), self.codec.encode(event), qos=1
        )

    def run(self, gateways: list[str], seconds: float, bare: BareRoundTrip) -> list[float]:
        """Send for ``seconds``: each gateway's heartbeat every 10 s and alert every 60 s,
        spread evenly; returns bare round trips sampled meanwhile."""
        plan: list[tuple[float, int, str]] = []
        count = len(gateways)
        for g, gateway in enumerate(gateways):
            phase = g / count
            t = phase * HEARTBEAT_S
            while t < seconds:
                plan.append((t, 0, gateway))
                t += HEARTBEAT_S
            t = phase * ALERT_EVERY_S
            while t < seconds:
                plan.append((t, 1, gateway))
                t += ALERT_EVERY_S
        plan.sort()
        bare_ms: list[float] = []
        began = time.perf_counter()
        next_bare = 0.5
        for n, (t, what, gateway) in enumerate(plan):
            ahead = began + t - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            if what == 0:
                self.heartbeat(gateway)
            else:
                self.alert(gateway, n)
            if t >= next_bare:
                next_bare += 0.5
                rt = bare.sample()
                if rt is not None:
                    bare_ms.append(rt)
        return bare_ms

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def hub_step(
    port: int, fleet: GatewayFleet, gateways: int, seconds: float, step: int
) -> dict[str, Any]:
    names = [f"s{step}-gw-{g:05d}" for g in range(gateways)]
    bare = BareRoundTrip(port)
    try:
        with fleet.lock:
            fleet.sent_at.clear()
        bare_ms = fleet.run(names, seconds, bare)
    finally:
        bare.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with fleet.lock:
            if all(i in fleet.acked_at for i in fleet.sent_at):
                break
        time.sleep(0.1)
    with fleet.lock:
        latencies = [
            (fleet.acked_at[i] - sent) * 1000
            for i, sent in fleet.sent_at.items()
            if i in fleet.acked_at
        ]
        unacked = len(fleet.sent_at) - len(latencies)
    p = percentiles(latencies)
    ok = unacked == 0 and p["n"] > 0 and p["p99"] <= ACK_P99_MS
    figures: dict[str, Any] = {
        "gateways": gateways,
        "heartbeats_per_s": gateways / HEARTBEAT_S,
        "alerts_per_s": gateways / ALERT_EVERY_S,
        "ack": p,
        "unacked": unacked,
        "bare_round_trip": percentiles(bare_ms),
        "pass": ok,
    }
    print(
        f"  {gateways:>6,} gateways ({gateways / HEARTBEAT_S:,.0f} heartbeats/s,"
        f" {gateways / ALERT_EVERY_S:,.1f} alerts/s): alert -> ack p50 {p['p50']:.0f} ms"
        f" p99 {p['p99']:.0f} ms max {p['max']:.0f} ms ({p['n']} alerts, {unacked} unacked);"
        f" bare MQTT p99 {figures['bare_round_trip']['p99']:.1f} ms: {'pass' if ok else 'FAIL'}",
        flush=True,
    )
    return figures


def hub_scale(counts: list[int], seconds: float, budget_s: float) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best: int | None = None
    failed: int | None = None
    tmp = Path(tempfile.mkdtemp(prefix="anmin-bench-hubscale-"))
    began = time.monotonic()
    with Mosquitto(persistence=False) as broker, PostgresCluster(durable=True) as pg:
        hub = HubProcess(
            "bench-hub", broker.broker, pg.create_database("scale"), log_path=tmp / "hub.log"
        )
        hub.start()
        try:
            asyncio.run(hub.wait_ready(60))
            fleet = GatewayFleet(broker.port)
            try:
                for k, g in enumerate(counts):
                    step = hub_step(broker.port, fleet, g, seconds, k)
                    steps.append(step)
                    if not step["pass"]:
                        failed = g
                        break
                    best = g
                    if time.monotonic() - began > budget_s:
                        print("  (time budget spent: stopping the search here)")
                        break
            finally:
                fleet.close()
        finally:
            hub.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "steps": steps,
        "largest_passing": best,
        "first_failing": failed,
        "heartbeat_s": HEARTBEAT_S,
        "alert_every_s": ALERT_EVERY_S,
        "window_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=["gateway", "hub", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--devices", default="2000,5000,10000,20000,40000,80000")
    parser.add_argument("--gateways", default="250,500,1000,2000,4000,8000")
    parser.add_argument("--probes", type=int, default=100, help="siren probes per step")
    parser.add_argument("--seconds", type=float, default=15.0, help="hub load per step")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds per search")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    devices = [int(n) for n in args.devices.split(",")]
    gateways = [int(n) for n in args.gateways.split(",")]
    probes, seconds, warmup = args.probes, args.seconds, 2.0
    if args.quick:
        devices, gateways, probes, seconds, warmup = [100], [10], 5, 2.0, 0.5
    results: dict[str, Any] = {}
    if args.part in ("gateway", "both"):
        print(
            f"gateway: devices at 1 reading / 10 s; pass = siren p99 <= {SIREN_P99_MS:.0f} ms"
            f" and >= {KEEP_UP:.0%} processed",
            flush=True,
        )
        results["gateway"] = gateway_scale(
            devices, probes, warmup, bisect=not args.quick, budget_s=args.budget
        )
        print(f"gateway: largest passing {results['gateway']['largest_passing']} devices")
    if args.part in ("hub", "both"):
        print(
            f"hub: per gateway a heartbeat every {HEARTBEAT_S:.0f} s and an alert every"
            f" {ALERT_EVERY_S:.0f} s; pass = alert -> ack p99 <= {ACK_P99_MS:.0f} ms, none lost",
            flush=True,
        )
        results["hub"] = hub_scale(gateways, seconds, args.budget)
        print(f"hub: largest passing {results['hub']['largest_passing']} gateways")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
