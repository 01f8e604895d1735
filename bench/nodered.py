"""The same load through Node-RED, side by side with the edge agent (issues 5 and 13).

Node-RED (the npm package ``node-red``, found on PATH or at $ANMIN_NODE_RED) runs the peer flow
the issues name: ``mqtt in`` (the gateway's reading topics, parsed JSON) -> ``function`` (a
running mean per device and metric, and a threshold on gas) -> ``mqtt out`` (an alert when the
threshold is crossed; a count every 1,000 readings, to measure throughput). The same Mosquitto
settings, the same 1,000 devices and the same readings (from another process) as
bench/edge_throughput.py. It does much less than the agent (no rule language, no hold or
clear, no outbox, no device health), so the ratios are an upper bound on what the agent gives up.

Prints the rate it sustains, reading -> alert latency at the background rate, and its RSS.
Without Node-RED it says so and exits 0 (the report marks it "not measured").

    .venv/bin/python bench/nodered.py [--rates 5000,10000,20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho

from bench.common import (
    GATEWAY,
    SITE,
    BareRoundTrip,
    Load,
    paho_client,
    percentiles,
    reading_payload,
    rss_mb,
    write_json,
)
from bus.broker import Mosquitto, free_port
from wire import topics
from wire.topics import Channel

ALERT_TOPIC = "bench/nodered/alert"
COUNT_TOPIC = "bench/nodered/count"
FUNCTION = """\
const p = msg.payload || {};
const values = p.values || {};
const means = context.get("means") || {};
const out = [];
for (const k in values) {
  const x = values[k];
  const key = p.device + "/" + k;
  const m = means[key];
  means[key] = m === undefined ? x : m + (x - m) / 10;
  if (k === "gas_lel" && x >= 50) {
    out.push({topic: "ALERT_TOPIC", payload: JSON.stringify({device: p.device, seq: p.seq, value: x,
      mean: means[key]})});
  }
}
context.set("means", means);
const n = (context.get("n") || 0) + 1;
context.set("n", n);
if (n % 1000 === 0) out.push({topic: "COUNT_TOPIC", payload: String(n)});
return [out];
""".replace("ALERT_TOPIC", ALERT_TOPIC).replace("COUNT_TOPIC", COUNT_TOPIC)


def node_red_binary() -> str | None:
    return os.environ.get("ANMIN_NODE_RED") or shutil.which("node-red")


def flows(port: int) -> list[dict[str, Any]]:
    return [
        {"id": "tab", "type": "tab", "label": "bench"},
        {
            "id": "broker",
            "type": "mqtt-broker",
            "broker": "127.0.0.1",
            "port": str(port),
            "clientid": "nodered-bench",
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": True,
        },
        {
            "id": "in",
            "type": "mqtt in",
            "z": "tab",
            "topic": topics.device_channel_filter(SITE, GATEWAY, Channel.READING),
            "qos": "0",
            "datatype": "json",
            "broker": "broker",
            "wires": [["fn"]],
        },
        {
            "id": "fn",
            "type": "function",
            "z": "tab",
            "func": FUNCTION,
            "outputs": 1,
            "wires": [["out"]],
        },
        {
            "id": "out",
            "type": "mqtt out",
            "z": "tab",
            "topic": "",
            "qos": "0",
            "retain": "false",
            "broker": "broker",
            "wires": [],
        },
    ]


class Watch:
    """Subscribes to the flow's output: the latest count, and alerts by probe sequence."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.alerts: dict[int, float] = {}
        self.changed = threading.Condition()

        def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
            at = time.perf_counter()
            with self.changed:
                if m.topic == COUNT_TOPIC:
                    self.count = max(self.count, int(m.payload))
                else:
                    self.alerts.setdefault(int(json.loads(m.payload)["seq"]), at)
                self.changed.notify_all()

        self.client = paho_client("bench-nodered-watch")
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(ALERT_TOPIC, 0), (COUNT_TOPIC, 0)])
        self.client.loop_start()
        self.sensor = paho_client("bench-nodered-sensor")
        self.sensor.connect("127.0.0.1", port)
        self.sensor.loop_start()

    def probe(self, seq: int, timeout: float) -> float | None:
        began = time.perf_counter()
        self.sensor.publish(
            topics.reading(SITE, GATEWAY, "probe-gas"),
            reading_payload("probe-gas", seq, "gas_lel", 80.0),
            qos=1,
        )
        deadline = time.monotonic() + timeout
        with self.changed:
            while seq not in self.alerts and time.monotonic() < deadline:
                self.changed.wait(deadline - time.monotonic())
            at = self.alerts.get(seq)
        return None if at is None else (at - began) * 1000

    def close(self) -> None:
        for client in (self.client, self.sensor):
            client.disconnect()
            client.loop_stop()


def run(
    binary: str, rates: list[float], seconds: float, background: float, samples: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="anmin-bench-nodered-") as tmp,
        Mosquitto(persistence=False) as broker,
    ):
        user_dir = Path(tmp)
        (user_dir / "flows.json").write_text(json.dumps(flows(broker.port)))
        http_port = free_port()
        log = (user_dir / "node-red.log").open("wb")
        began = time.perf_counter()
        process = subprocess.Popen(
            [binary, "--userDir", str(user_dir), "--port", str(http_port), "flows.json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        watch = Watch(broker.port)
        try:
            seq = 0
            ready = None
            deadline = time.monotonic() + 90
            while ready is None and time.monotonic() < deadline:  # until the flow answers
                if process.poll() is not None:
                    raise RuntimeError((user_dir / "node-red.log").read_text()[-2000:])
                seq += 1
                ready = watch.probe(seq, 1.0)
            if ready is None:
                raise TimeoutError("Node-RED's flow did not answer within 90 s")
            results["start_s"] = time.perf_counter() - began
            results["rss_start_mb"] = rss_mb(process.pid)
            print(
                f"Node-RED {version(binary)} up in {results['start_s']:.1f} s,"
                f" RSS {results['rss_start_mb']:.0f} MB",
                flush=True,
            )
            best = 0.0
            results["rates"] = []
            for rate in rates:
                with Load(broker.port, 1000, rate) as load:
                    before, t0 = watch.count, time.perf_counter()
                    time.sleep(seconds)
                    done = (watch.count - before) / (time.perf_counter() - t0)
                    offered = load.offered()
                best = max(best, done)
                results["rates"].append({"rate": rate, "offered": offered, "processed": done})
                print(f"offered {offered:>9,.0f}/s  processed {done:>9,.0f}/s", flush=True)
            results["sustained"] = best
            # Let the backlog of the overload rates drain, so the latency is not theirs.
            last, stable_since, limit = -1, time.monotonic(), time.monotonic() + 30
            while time.monotonic() - stable_since < 1.0 and time.monotonic() < limit:
                if watch.count != last:
                    last, stable_since = watch.count, time.monotonic()
                time.sleep(0.1)
            bare = BareRoundTrip(broker.port)
            latencies: list[float] = []
            bare_ms: list[float] = []
            with Load(broker.port, 1000, background):
                time.sleep(1.0)
                t0 = time.monotonic()
                for _ in range(samples):
                    if time.monotonic() - t0 > 60:
                        break
                    seq += 1
                    ms = watch.probe(seq, 5.0)
                    if ms is not None:
                        latencies.append(ms)
                    rt = bare.sample()
                    if rt is not None:
                        bare_ms.append(rt)
            bare.close()
            results["background"] = background
            results["latency"] = percentiles(latencies)
            results["bare_round_trip"] = percentiles(bare_ms)
            results["rss_mb"] = rss_mb(process.pid)
            p = results["latency"]
            print(
                f"sustained: {best:,.0f} readings/s; reading -> alert at {background:,.0f}/s:"
                f" p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms ({p['n']} samples);"
                f" RSS {results['rss_mb']:.0f} MB",
                flush=True,
            )
        finally:
            watch.close()
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            log.close()
    results["version"] = version(binary)
    return results


def version(binary: str) -> str:
    package = Path(binary).resolve().parent / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "(version unknown)"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--background", type=float, default=5000.0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    binary = node_red_binary()
    if binary is None:
        print("Node-RED is not installed (npm install -g node-red): not measured")
        write_json(args.json, {"missing": "node-red is not installed (npm install -g node-red)"})
        return
    rates = [float(r) for r in args.rates.split(",")]
    write_json(args.json, run(binary, rates, args.seconds, args.background, args.samples))


if __name__ == "__main__":
    main()
