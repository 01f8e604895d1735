"""End to end: a life-safety reading from a sensor to the siren, the hub, the speakers and the
family, with real processes on one machine (issue 13).

One Mosquitto, one InfluxDB (the agent's telemetry), one PostgreSQL (durable), the edge agent
(``python -m anmin edge run``: every preset, 1,000 background devices, probe gas sensors and
speakers), one hub process (``python -m hub`` with a routing policy that tells the probe unit's
family by e-mail and webhook), an SMTP server and a webhook receiver. For each probe a fresh gas
sensor publishes one Extreme reading (a new cause: a new incident, a new broadcast) while the
background devices send 1,000 or 5,000 readings/s from another process. Observers, all in this
process and all on one clock (``time.perf_counter``), stamp:

  (a) the ``siren_on`` command arriving at the sensor, and the alert event leaving the gateway
      for the hub (its first sight on the broker: "uplink");
  (b) the hub's ack of the alert event (sent only after the event is committed);
  (c) the ``play`` command arriving at the first speaker, and its receipt reaching the hub's
      topic (the speaker here answers at once: no audio);
  (d) the notification arriving at the SMTP server and at the webhook receiver.

Baseline in the same run, under the same load: a bare paho publisher -> subscriber round trip
(QoS 1) on the same broker. Targets: p99 (a) <= 10 ms; (c), (d) <= 1 s.

    .venv/bin/python bench/e2e_latency.py [--rates 1000,5000] [--samples 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.common import (
    BUILDING,
    GATEWAY,
    PROBE_UNIT,
    SITE,
    BareRoundTrip,
    EdgeAgent,
    Load,
    edge_metric,
    paho_client,
    percentiles,
    probe_id,
    reading_payload,
    write_json,
)
from bus.broker import Mosquitto
from bus.influx import Influxd
from hub.store import Store
from tests.integration.hub.multihub import HubProcess
from tests.integration.hub.postgres import PostgresCluster
from tests.integration.hub.receivers import SmtpSink
from wire import Codec, Command, Receipt, cap, topics
from wire.topics import Channel

STAGES = ("siren", "uplink", "stored", "play", "receipt", "email", "webhook")
DEVICE_LINE = re.compile(r"Device: (\S+)")
POLICY = """\
version: 1
timezone: UTC
delivery: {{retries: 2, retry_after_s: 30}}
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, sender: hub@anmin.test}}
  hook: {{type: webhook, url: "{webhook_url}"}}
routes:
  - name: life safety
    kinds: [gas]
    tiers:
      - {{after_minutes: 0, roles: [family], channels: [email, hook]}}
"""


class Stamps:
    """When each stage of each probe was seen: probe device -> stage -> perf_counter."""

    def __init__(self) -> None:
        self.at: dict[str, dict[str, float]] = {}
        self.changed = threading.Condition()

    def stamp(self, device: str | None, stage: str, at: float) -> None:
        if device is None:
            return
        with self.changed:
            self.at.setdefault(device, {}).setdefault(stage, at)  # the first one counts
            self.changed.notify_all()

    def wait_all(self, device: str, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.at.get(device, {})) < len(STAGES):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return dict(self.at.get(device, {}))


class TimedSmtp(SmtpSink):
    """The tests' SMTP server, stamping each message with its probe device on arrival."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__()
        self.stamps = stamps

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.perf_counter()
        message = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        body = message.get_body()
        text = body.get_content() if body is not None else ""
        found = DEVICE_LINE.search(str(text))
        self.stamps.stamp(found.group(1) if found else None, "email", at)
        return "250 OK"


class TimedWebhook:
    """An HTTP receiver stamping each notification with its probe device on arrival."""

    def __init__(self, stamps: Stamps) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                stamps.stamp(body.get("incident", {}).get("device"), "webhook", at)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Observer:
    """One MQTT client watching the gateway's traffic; it also plays the speakers' part:
    every ``play`` command is answered at once with a receipt, as a speaker does after playing.
    """

    def __init__(self, port: int, stamps: Stamps) -> None:
        self.stamps = stamps
        self.codec = Codec()
        self.event_device: dict[str, str] = {}  # alert event id -> probe device
        self._broadcast_device: dict[str, str | None] = {}  # broadcast id -> probe device
        self.alert_topic = topics.gateway_topic(Channel.ALERT, SITE, GATEWAY)
        self.ack_topic = topics.gateway_topic(Channel.ACK, SITE, GATEWAY)
        self.receipt_topic = topics.gateway_topic(Channel.RECEIPT, SITE, GATEWAY)
        self.client = paho_client("bench-observer")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        for topic in (
            topics.device_channel_filter(SITE, GATEWAY, Channel.CMD),
            self.alert_topic,
            self.ack_topic,
            self.receipt_topic,
        ):
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        data = json.loads(m.payload)
        if m.topic == self.alert_topic:
            if data.get("device", "").startswith("probe-"):
                self.event_device[data["id"]] = data["device"]
                self.stamps.stamp(data["device"], "uplink", at)  # the event left the gateway
        elif m.topic == self.ack_topic:
            for event_id in data["ids"]:
                self.stamps.stamp(self.event_device.get(event_id), "stored", at)
        elif m.topic == self.receipt_topic:
            self.stamps.stamp(self._cause_device(data.get("broadcast_id")), "receipt", at)
        elif data.get("action") == "siren_on":
            self.stamps.stamp(data["device"], "siren", at)
        elif data.get("action") == "play":
            command = self.codec.decode(
                bytes(m.payload), Command, datetime.now(UTC), check_time=False
            )
            assert command.broadcast is not None
            device = self.event_device.get(command.broadcast.cause or "")
            self._broadcast_device[command.broadcast.id] = device
            self.stamps.stamp(device, "play", at)
            receipt = Receipt(
                broadcast_id=command.broadcast.id,
                speaker=command.device,
                outcome="played",
                ts=datetime.now(UTC),
                content_hash=cap.content_hash(command.broadcast),
            )
            self.client.publish(
                topics.device_receipt(SITE, GATEWAY, command.device),
                self.codec.encode(receipt),
                qos=1,
            )

    def _cause_device(self, broadcast_id: str | None) -> str | None:
        return self._broadcast_device.get(broadcast_id or "")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def setup_family(url: str) -> None:
    """The probe unit's resident and her daughter, who is told by e-mail and webhook."""
    store = Store(url)
    try:
        daughter = store.add_person(
            "bench-daughter", "Bench Daughter", "family", email="daughter@family.test"
        )
        store.link_family(daughter, store.add_resident("Bench Grandma", SITE, BUILDING, PROBE_UNIT))
    finally:
        store.close()


def measure_rate(
    port: int,
    stamps: Stamps,
    devices: int,
    rate: float,
    probes: range,
    warmup_s: float,
    budget_s: float,
) -> dict[str, Any]:
    sensor = paho_client("bench-probe-sensor")
    sensor.connect("127.0.0.1", port)
    sensor.loop_start()
    bare = BareRoundTrip(port)
    lat: dict[str, list[float]] = {stage: [] for stage in STAGES}
    bare_ms: list[float] = []
    missing: dict[str, int] = dict.fromkeys(STAGES, 0)
    try:
        with Load(port, devices, rate) as load:
            time.sleep(warmup_s)  # a benchmark: let the load reach its pace first
            began_rate = time.monotonic()
            for n, i in enumerate(probes):
                if time.monotonic() - began_rate > budget_s:
                    print(f"  time budget spent after {n} probes", flush=True)
                    break
                device = probe_id(i)
                began = time.perf_counter()
                sensor.publish(
                    topics.reading(SITE, GATEWAY, device),
                    reading_payload(device, 1, "gas_lel", 80.0),
                    qos=1,
                )
                seen = stamps.wait_all(device, timeout=15.0)
                if any(stage not in seen or seen[stage] - began > 1.0 for stage in STAGES):
                    # An outlier, stage by stage: where did the time go?
                    print(
                        f"  slow probe {device}: "
                        + ", ".join(
                            f"{stage} {(seen[stage] - began) * 1000:,.0f} ms"
                            if stage in seen
                            else f"{stage} -"
                            for stage in STAGES
                        ),
                        flush=True,
                    )
                for stage in STAGES:
                    if stage in seen:
                        lat[stage].append((seen[stage] - began) * 1000)
                    else:
                        missing[stage] += 1
                sample = bare.sample()
                if sample is not None:
                    bare_ms.append(sample)
                if (n + 1) % 25 == 0:
                    print(f"  {rate:,.0f}/s: {n + 1}/{len(probes)} probes", flush=True)
            offered = load.offered()
    finally:
        bare.close()
        sensor.disconnect()
        sensor.loop_stop()
    return {
        "rate": rate,
        "offered": offered,
        "stages": {stage: percentiles(values) for stage, values in lat.items()},
        "missing": missing,
        "bare_round_trip": percentiles(bare_ms),
    }


def run(
    rates: list[float],
    samples: int,
    devices: int,
    speakers: int,
    warmup_s: float,
    budget_s: float,
) -> dict[str, Any]:
    stamps = Stamps()
    results: dict[str, Any] = {"devices": devices, "speakers": speakers, "samples": samples}
    tmp = Path(tempfile.mkdtemp(prefix="anmin-bench-e2e-"))
    smtp = TimedSmtp(stamps)
    smtp.start()
    webhook = TimedWebhook(stamps)
    hub: HubProcess | None = None
    try:
        with (
            Mosquitto(persistence=False) as broker,
            Influxd(tmp / "influxd") as influx,
            PostgresCluster(durable=True) as pg,
        ):
            influx.query("CREATE DATABASE anmin")
            url = pg.create_database("e2e")
            policy = tmp / "routing.yaml"
            policy.write_text(POLICY.format(smtp_port=smtp.port, webhook_url=webhook.url))
            hub = HubProcess(
                "bench-hub", broker.broker, url, policy=policy, log_path=tmp / "hub.log"
            )
            hub.start()
            asyncio.run(hub.wait_ready(60))
            setup_family(url)
            observer = Observer(broker.port, stamps)
            total = samples * len(rates)
            with EdgeAgent(
                broker.port,
                devices=devices,
                probes=total,
                speakers=speakers,
                influx_url=influx.url,
            ) as agent:
                print(f"edge agent up in {agent.started_s:.1f} s; hub up; measuring", flush=True)
                results["rates"] = []
                for k, rate in enumerate(rates):
                    probes = range(k * samples, (k + 1) * samples)
                    figures = measure_rate(
                        broker.port, stamps, devices, rate, probes, warmup_s, budget_s
                    )
                    # The agent's uplink counters so far: a resend (the first publish or
                    # its ack lost, or the hub slow to answer) explains a slow (b)-(d).
                    figures["uplink"] = {
                        name: edge_metric(agent.metrics_port, f"anmin_edge_uplink_{name}")
                        for name in ("sent", "resent", "acked", "held_for_order", "errors")
                    }
                    results["rates"].append(figures)
                    report(figures)
                results["agent_rss_mb"] = agent.rss_mb()
            observer.close()
    finally:
        if hub is not None:
            hub.stop()
            # What went wrong in the hub, if anything: it explains an outlier.
            log = tmp / "hub.log"
            faults = [
                line
                for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                if " ERROR " in line or " WARNING " in line
            ]
            print(f"hub log: {len(faults)} warnings and errors", *faults[:20], sep="\n  ")
        webhook.close()
        shutil.rmtree(tmp, ignore_errors=True)
        smtp.stop()
    return results


def report(figures: dict[str, Any]) -> None:
    print(
        f"at {figures['rate']:,.0f} readings/s (offered {figures['offered']:,.0f}/s),"
        " ms p50 / p99 / max:"
    )
    for stage, p in {**figures["stages"], "bare MQTT": figures["bare_round_trip"]}.items():
        gone = figures["missing"].get(stage, 0)
        print(
            f"  {stage:10s} {p['p50']:8.1f} {p['p99']:8.1f} {p['max']:8.1f}"
            f"  ({p['n']} samples{f', {gone} missing' if gone else ''})"
        )
    if uplink := figures.get("uplink"):
        print("  edge uplink so far: " + ", ".join(f"{k} {v:,.0f}" for k, v in uplink.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="1000,5000", help="background readings/s")
    parser.add_argument("--samples", type=int, default=100, help="probes per rate")
    parser.add_argument("--devices", type=int, default=1000, help="background devices")
    parser.add_argument("--speakers", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load first")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per rate at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = run(rates, args.samples, args.devices, args.speakers, args.warmup, args.budget)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
