"""Shared pieces of the end-to-end, scale and memory benchmarks (issue 13).

An edge agent in its own process (``python -m anmin edge run``), readings offered at a steady
rate from another process (so that the load never competes with the observers' time stamps for
this process's GIL), percentiles, RSS, and a bare MQTT round trip as the baseline.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python bench/x.py``: the tests' helpers live at ROOT
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bus.broker import free_port  # noqa: E402
from wire import topics  # noqa: E402

SITE, GATEWAY, BUILDING = "bench", "gw-1", "b1"
KINDS = ["gas", "co", "smoke", "heat", "electrical", "flood", "pump", "wearable"]
METRIC = {
    "gas": ("gas_lel", 0.5),
    "co": ("co_ppm", 2.0),
    "smoke": ("smoke_obs", 0.1),
    "heat": ("temp_c", 24.0),
    "electrical": ("residual_ma", 3.0),
    "flood": ("water_level_cm", 0.0),
    "pump": ("vibration_mm_s", 2.0),
    "wearable": ("heart_rate_bpm", 72.0),
}
PROBE_UNIT = "u-probe"
# The probes' rule: no hold, so the alert follows the reading at once and what is measured is
# the system's latency, not a timer's. Same shape as a preset's Extreme gas level.
PROBE_RULES = """\
  - id: probe
    kind: gas
    life_safety: true
    devices: {kinds: [gas], rooms: [probe]}
    create:
      Extreme:
        all: [{metric: gas_lel, op: ">=", value: 50, unit: "%LEL"}]
    clear:
      all: [{metric: gas_lel, op: "<", value: 10, unit: "%LEL"}]
    actions:
      - {do: siren}
    message: "probe gas {gas_lel:.1f} %LEL"
"""
PRESETS = (
    "gas, co-ul2034, heat-a1r, smoke, electrical, flood, pump, device-health, elder-care, lockers"
)


def paho_client(client_id: str) -> paho.Client:
    """A paho client for the benchmarks' probes and watchers, with Nagle's algorithm off as
    the agent and the hub have it (bus.mqtt): otherwise a small publish can wait for the TCP
    ack of the one before it (tens of ms), and the benchmark would time itself."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)

    def on_socket_open(_c: paho.Client, _u: object, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    c.on_socket_open = on_socket_open
    return c


def device_id(i: int) -> str:
    return f"d{i:05d}"


def probe_id(i: int) -> str:
    return f"probe-{i:04d}"


def speaker_id(i: int) -> str:
    return f"spk-{i:02d}"


def edge_config(
    broker_port: int,
    data_dir: Path,
    metrics_port: int,
    *,
    devices: int,
    interval_s: float = 60.0,
    probes: int = 0,
    speakers: int = 0,
    influx_url: str | None = None,
) -> str:
    """An edge config: every preset, ``devices`` background devices, probes and speakers."""
    lines = [
        f"site: {SITE}",
        f"gateway: {GATEWAY}",
        f"building: {BUILDING}",
        f"data_dir: {data_dir}",
        f"broker: {{host: 127.0.0.1, port: {broker_port}}}",
        f"metrics_port: {metrics_port}",
    ]
    if influx_url is not None:
        lines.append(f"telemetry: {{url: '{influx_url}', database: anmin}}")
    lines += ["rules:", f"  include: [{PRESETS}]", "  rules:", *PROBE_RULES.splitlines()]
    lines.append("devices:")
    # Probes and speakers never report on their own: a day's interval keeps them from being
    # called silent during the run.
    for i in range(probes):
        lines.append(
            f"  - {{id: {probe_id(i)}, kind: gas, unit: {PROBE_UNIT}, room: probe,"
            " interval_s: 86400}"
        )
    for i in range(speakers):
        lines.append(f"  - {{id: {speaker_id(i)}, kind: speaker, interval_s: 86400}}")
    for i in range(devices):
        kind = KINDS[i % len(KINDS)]
        lines.append(
            f"  - {{id: {device_id(i)}, kind: {kind}, unit: 'u{i % 50}', interval_s: {interval_s}}}"
        )
    return "\n".join(lines) + "\n"


def reading_payload(device: str, seq: int, metric: str, value: float) -> bytes:
    ts = datetime.now(UTC).isoformat()
    return json.dumps({"device": device, "seq": seq, "ts": ts, "values": {metric: value}}).encode()


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max (nearest rank) and the count; NaN when there is nothing."""
    if not values:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p99": nan, "max": nan}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"n": len(ordered), "p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def edge_metric(metrics_port: int, name: str) -> float:
    """One counter from the agent's /metrics (``anmin_edge_readings`` etc.), summed."""
    total = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith((f"{name}_total{{", f"{name}{{", f"{name}_total ", f"{name} ")):
                total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class EdgeAgent:
    """``python -m anmin edge run`` with a config written here; a context manager."""

    broker_port: int
    devices: int
    interval_s: float = 60.0
    probes: int = 0
    speakers: int = 0
    influx_url: str | None = None
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0

    def __enter__(self) -> EdgeAgent:
        self._tmp = tempfile.TemporaryDirectory(prefix="anmin-bench-edge-")
        tmp = Path(self._tmp.name)
        path = tmp / "edge.yaml"
        path.write_text(
            edge_config(
                self.broker_port,
                tmp / "data",
                self.metrics_port,
                devices=self.devices,
                interval_s=self.interval_s,
                probes=self.probes,
                speakers=self.speakers,
                influx_url=self.influx_url,
            )
        )
        self._log = (tmp / "edge.log").open("wb")
        began = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "anmin", "edge", "run", "--config", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the edge agent exited: {self.log()[-2000:]}")
            try:
                edge_metric(self.metrics_port, "anmin_edge_readings")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the edge agent did not start: {self.log()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        self.started_s = time.perf_counter() - began
        return self

    def log(self) -> str:
        return (Path(self._tmp.name) / "edge.log").read_text(errors="replace")

    def processed(self) -> float:
        return edge_metric(self.metrics_port, "anmin_edge_readings")

    def rss_mb(self) -> float:
        assert self.process is not None
        return rss_mb(self.process.pid)

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self._tmp.cleanup()


# -- background load, in its own process ------------------------------------------------------


def _load_worker(
    port: int,
    devices: int,
    rate: float,
    stop: Any,
    sent_out: Synchronized[int],
    began_out: Synchronized[float],
) -> None:
    client = paho_client(f"bench-load-{os.getpid()}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    seq = [0] * devices
    began = time.perf_counter()
    began_out.value = began
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    sent = 0
    while not stop.is_set():
        for _ in range(per_tick):
            i = sent % devices
            metric, value = METRIC[KINDS[i % len(KINDS)]]
            seq[i] += 1
            client.publish(
                topics.reading(SITE, GATEWAY, device_id(i)),
                reading_payload(device_id(i), seq[i], metric, value),
                qos=0,
            )
            sent += 1
        sent_out.value = sent
        ahead = began + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    client.disconnect()
    client.loop_stop()


class Load:
    """Readings from ``devices`` background devices at ``rate``/s (QoS 0), in a child process."""

    def __init__(self, port: int, devices: int, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        self.sent: Synchronized[int] = ctx.Value("q", 0)
        self.began: Synchronized[float] = ctx.Value("d", 0.0)
        self.rate = rate
        self.process = ctx.Process(
            target=_load_worker,
            args=(port, devices, rate, self.stop_event, self.sent, self.began),
            daemon=True,
        )

    def __enter__(self) -> Load:
        if self.rate > 0:
            self.process.start()
            # A spawned interpreter takes a second or so to import paho and connect.
            deadline = time.monotonic() + 60
            while self.sent.value == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        return self

    def offered(self) -> float:
        """The rate actually offered so far (perf_counter is one clock for every process)."""
        if self.began.value == 0.0:
            return 0.0
        return self.sent.value / max(1e-9, time.perf_counter() - self.began.value)

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        if self.rate > 0:
            self.process.join(timeout=20)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)


# -- the baseline: the broker's own round trip --------------------------------------------------


class BareRoundTrip:
    """A bare paho publisher and subscriber: publish -> receive on the same broker (QoS 1)."""

    def __init__(self, port: int) -> None:
        self.arrived = threading.Event()
        self.topic = f"bench/bare/{os.getpid()}"

        def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
            self.arrived.set()

        self.sub = paho_client("bench-bare-rt-sub")
        self.sub.on_message = on_message
        self.sub.connect("127.0.0.1", port)
        self.sub.subscribe(self.topic, qos=1)
        self.sub.loop_start()
        self.pub = paho_client("bench-bare-rt-pub")
        self.pub.connect("127.0.0.1", port)
        self.pub.loop_start()
        time.sleep(0.3)  # a benchmark, not a test: let the subscription settle

    def sample(self) -> float | None:
        """One round trip in ms, or None if it took over 5 s."""
        self.arrived.clear()
        began = time.perf_counter()
        self.pub.publish(self.topic, reading_payload("bare", 1, "gas_lel", 80.0), qos=1)
        if self.arrived.wait(5):
            return (time.perf_counter() - began) * 1000
        return None

    def close(self) -> None:
        for client in (self.pub, self.sub):
            client.disconnect()
            client.loop_stop()


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str))


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    began = time.perf_counter()
    print(f"\n== {title}", flush=True)
    yield
    print(f"== {title}: done in {time.perf_counter() - began:.0f} s", flush=True)


def fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"
