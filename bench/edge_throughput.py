"""Edge agent throughput, latency and memory, through a real Mosquitto (issue 5).

Runs, in one go and on one broker:
  1. a bare paho-mqtt subscriber (the baseline: what a do-nothing Python client receives);
  2. the edge agent (`anmin edge run`, its own process) with every preset enabled for 1,000
     devices, fed at rising rates: the rate it sustains (readings processed per second while
     the publisher offers more) and that rate divided by the baseline;
  3. at 5,000 readings/s of background load (a batch every millisecond: --tick-ms), the
     latency from a probe reading published to the alert it causes reaching the probe
     (p50 / p99), stamped as it arrives, before the probe acknowledges it as the hub would;
  4. the agent's RSS.
Prints figures; asserts nothing. Usage: .venv/bin/python bench/edge_throughput.py
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import math
import multiprocessing
import os
import queue
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/x.py

from bench.common import BUILDING, GATEWAY, KINDS, METRIC, SITE, paho_client
from bus.broker import Mosquitto, free_port
from wire import topics

PROBE = "probe-gas"
# The background load's batches: 1,000 devices that report on their own arrive spread out,
# not 50 at once every 10 ms (--tick-ms 10 shows what such bursts do to the latency).
BACKGROUND_TICK_S = 0.001


class EventLike(Protocol):
    def is_set(self) -> bool: ...


# The probe's rule: no hold, so that the alert follows the reading at once and the
# latency measured is the agent's, not a timer's.
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
"""


def config(
    broker_port: int, data_dir: Path, metrics_port: int, devices: int, parts: int = 1
) -> str:
    lines = [
        f"parts: {parts}",
        f"site: {SITE}",
        f"gateway: {GATEWAY}",
        f"building: {BUILDING}",
        f"data_dir: {data_dir}",
        f"broker: {{host: 127.0.0.1, port: {broker_port}}}",
        f"metrics_port: {metrics_port}",
        "rules:",
        "  include: [gas, co-ul2034, heat-a1r, smoke, electrical, flood, pump, device-health,"
        " elder-care, lockers]",
        "  rules:",
        *PROBE_RULES.splitlines(),
        "devices:",
        f"  - {{id: {PROBE}, kind: gas, unit: '0', room: probe, interval_s: 1}}",
    ]
    for i in range(devices):
        kind = KINDS[i % len(KINDS)]
        lines.append(f"  - {{id: d{i:04d}, kind: {kind}, unit: '{i % 50}', interval_s: 60}}")
    return "\n".join(lines) + "\n"


def payload(device: str, seq: int, metric: str, value: float) -> bytes:
    ts = datetime.now(UTC).isoformat()
    return json.dumps({"device": device, "seq": seq, "ts": ts, "values": {metric: value}}).encode()


def _flat_out(port: int, topic: str, count: int) -> None:
    """Publish ``count`` readings as fast as the load's publisher can (a process of its own)."""
    publisher = RawPublisher(port, "bench-bare-pub")
    packet = publisher.packet(topic.encode(), payload("d0000", 1, "gas_lel", 0.5))
    for start in range(0, count, 1000):
        publisher.send([packet] * min(1000, count - start))
    publisher.close()


def bare_subscriber_rate(port: int, count: int) -> float:
    """Messages/s a do-nothing paho subscriber receives from a flat-out publisher in another
    process (as the agent's load comes from another process): from the first message to the
    last, which is the count or whatever has come when nothing more arrives for 1 s (a
    broker may drop QoS 0 for a subscriber that falls behind)."""
    lock = threading.Lock()
    received, first, last = 0, 0.0, 0.0

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal received, first, last
        with lock:
            last = time.perf_counter()
            if received == 0:
                first = last
            received += 1

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sub")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/bare", qos=0)
    sub.loop_start()
    time.sleep(0.3)  # a benchmark, not a test: let the subscription settle
    publisher = multiprocessing.Process(target=_flat_out, args=(port, "bench/bare", count))
    publisher.start()
    while True:
        time.sleep(0.2)
        with lock:
            done = received >= count or (received and time.perf_counter() - last > 1.0)
        if done:
            break
    publisher.join(timeout=30)
    sub.loop_stop()
    sub.disconnect()
    with lock:
        print(f"  (bare subscriber received {received:,} of {count:,})")
        return received / (last - first) if last > first else 0.0


def plain_agent(port: int, handled: Any, stop: EventLike) -> None:
    """The issue's reference point: a plain paho agent (parse, running mean, threshold,
    publish) on the same readings, in its own process. ``handled`` counts the readings."""
    alert_topic = topics.gateway_topic(topics.Channel.ALERT, SITE, GATEWAY)
    means: dict[tuple[str, str], float] = {}
    alarmed: set[str] = set()

    def on_message(c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        reading = json.loads(m.payload)
        device = reading["device"]
        for name, value in reading["values"].items():
            key = (device, name)
            means[key] = 0.9 * means.get(key, value) + 0.1 * value
            if name == "gas_lel" and (value >= 50) != (device in alarmed):
                alarmed.symmetric_difference_update({device})
                event = {"id": f"{device}-{reading['seq']}", "device": device, "on": value >= 50}
                c.publish(alert_topic, json.dumps(event).encode(), qos=1)
        handled.value += 1

    client = paho_client("bench-plain-agent")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topics.gateway_devices_filter(SITE, GATEWAY), qos=1)
    client.loop_start()
    while not stop.is_set():
        time.sleep(0.1)
    client.loop_stop()
    client.disconnect()


def measure(
    label: str, port: int, rates: list[float], seconds: float, devices: int, count: Any
) -> float:
    """Offer each rate for ``seconds``; print and return the best rate ``count()`` shows."""
    load = Load(port, devices)
    best = 0.0
    for rate in rates:
        before, began = count(), time.perf_counter()
        offered = load.run(rate, seconds)
        # Sustained = what was processed in the window, not what was offered.
        done = (count() - before) / (time.perf_counter() - began)
        best = max(best, done)
        print(f"{label}: offered {offered:>9,.0f}/s  processed {done:>9,.0f}/s")
    load.close()
    # Let the backlog of the overload rates drain, so the latency is not theirs.
    last, stable_since, limit = -1.0, time.monotonic(), time.monotonic() + 30
    while time.monotonic() - stable_since < 1.0 and time.monotonic() < limit:
        if (now := count()) != last:
            last, stable_since = now, time.monotonic()
        time.sleep(0.1)
    return best


def latency(
    label: str,
    port: int,
    devices: int,
    background: float,
    samples: int,
    tick: float = BACKGROUND_TICK_S,
) -> float:
    """Probe latencies under ``background`` readings/s from another process, sent a batch
    every ``tick`` seconds; prints them."""
    # The background load comes from another process: in this one its publishing thread
    # would hold the GIL while the probe's reply waits (tens of ms).
    stop = multiprocessing.Event()
    process = multiprocessing.Process(
        target=background_load, args=(port, devices, background, stop, tick)
    )
    process.start()
    latencies, missed = probe_latencies(port, samples)
    stop.set()
    process.join(timeout=30)
    if not latencies:
        print(f"{label}: no probe reading was answered")
        return math.inf
    # A reading with no alert in 5 s counts as one that never got one, not as no sample.
    latencies = sorted(latencies) + [math.inf] * missed
    p99 = latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)]
    print(
        f"{label}: reading -> alert at {background:,.0f}/s background: p50"
        f" {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms ({len(latencies)} samples,"
        f" {missed} unanswered within 5 s)"
    )
    return p99


def durable_commits(directory: Path, samples: int) -> list[float]:
    """Milliseconds per commit of an alert-sized row with its rule's part, as the outbox
    commits an alarm (SQLite WAL, synchronous=FULL), on the disk the agent writes to: the
    floor under reading -> alert, which the issue wants durable before it is published."""
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / "commit-floor.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE alert (id INTEGER PRIMARY KEY, payload BLOB)")
    db.execute("CREATE TABLE part (name TEXT PRIMARY KEY, blob BLOB)")
    out = []
    for i in range(samples):
        began = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO alert (payload) VALUES (?)", (bytes(600),))
        db.execute("INSERT OR REPLACE INTO part VALUES ('probe', ?)", (bytes(2000),))
        db.execute("COMMIT")
        out.append((time.perf_counter() - began) * 1000)
        db.execute("DELETE FROM alert WHERE id = ?", (i + 1,))  # as an ack does, not synced
    db.close()
    return out


def processed(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("anmin_edge_readings_total{") or line.startswith(
                "anmin_edge_readings{"
            ):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def histogram_quantiles(metrics_port: int, name: str) -> tuple[float, float, int] | None:
    """p50 and p99 (in ms; a bucket's upper bound, the histogram's resolution) and the count
    of one of the agent's /metrics histograms; None before any observation."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = rf'^{name}_bucket{{[^}}]*le="([^"]+)"[^}}]*}} (\S+)$'
    buckets = [(float(le), float(n)) for le, n in re.findall(pattern, text, re.M)]
    if not buckets or not buckets[-1][1]:
        return None
    total = buckets[-1][1]

    def quantile(q: float) -> float:
        return next(le for le, count in buckets if count >= q * total) * 1000

    return quantile(0.5), quantile(0.99), int(total)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (an agent in parts: the parent and a process a part)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                out += _tree(int(child))
    return out


def memory_mb(pid: int) -> tuple[float, float]:
    """RSS and PSS of ``pid`` and its descendants, in MB: RSS counts the pages the processes
    share once in each; PSS shares each page out among every process that maps it."""
    rss = pss = 0.0
    for each in _tree(pid):
        rss += rss_mb(each)
        for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) / 1024
    return rss, pss


PRESENT = 1 << 63
PFN = (1 << 55) - 1


def resident_once_mb(pid: int) -> float | None:
    """The resident pages of ``pid`` and its descendants, each counted once however many of
    them map it, in MB: the RSS of the agent as a whole, which summing its processes' RSS
    overstates (the parts share what was loaded before the fork) and PSS understates (it
    leaves out the share of a page that processes outside the agent map too, such as libc's).
    Read from /proc/PID/pagemap; None where the kernel hides page frames (not root)."""
    frames: set[int] = set()
    hidden = False
    page = os.sysconf("SC_PAGE_SIZE")
    for each in _tree(pid):
        with contextlib.suppress(OSError), Path(f"/proc/{each}/pagemap").open("rb") as pagemap:
            for line in Path(f"/proc/{each}/maps").read_text().splitlines():
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if line.endswith("[vsyscall]"):
                    continue  # not in pagemap's reach
                pagemap.seek(start // page * 8)
                entries = array.array("Q", pagemap.read((end - start) // page * 8))
                for entry in entries:
                    if entry & PRESENT:
                        if entry & PFN:
                            frames.add(entry & PFN)
                        else:
                            hidden = True
    return None if hidden else len(frames) * page / 2**20


def _memory(pid: int) -> str:
    rss, pss = memory_mb(pid)
    once = resident_once_mb(pid)
    shown = "n/a (not root)" if once is None else f"{once:.0f} MB"
    return f"RSS {rss:.0f} MB, PSS {pss:.0f} MB, resident once {shown}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class RawPublisher:
    """A QoS 0 MQTT 3.1.1 publisher on a plain socket: PUBLISH packets made from byte
    templates and written in batches. A paho publisher (json, datetime and paho's work per
    message) offers at most ~30,000 readings/s here, under what the receivers take; this one
    offers well over 100,000/s, so the rates measured are the receivers', and it leaves them
    more of the machine's two cores."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = client_id.encode()
        # Protocol "MQTT" level 4, clean session, no keepalive (the broker never times it out).
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(name).to_bytes(2, "big") + name
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = self.sock.recv(4)
        if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
            raise RuntimeError(f"the broker refused the load's connection: {connack!r}")

    @staticmethod
    def packet(topic: bytes, body: bytes) -> bytes:
        rest = len(topic).to_bytes(2, "big") + topic + body
        return b"\x30" + _varint(len(rest)) + rest

    def send(self, packets: list[bytes]) -> None:
        self.sock.sendall(b"".join(packets))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


class Load:
    """Publishes background readings from the 1,000 devices at a set rate (QoS 0), the same
    JSON readings the agent's own simulator sends (`payload`), through RawPublisher."""

    def __init__(self, port: int, devices: int) -> None:
        self.publisher = RawPublisher(port, "bench-load")
        self.devices = devices
        self.seq = [0] * devices
        self.sent = 0
        self.topics = [topics.reading(SITE, GATEWAY, f"d{i:04d}").encode() for i in range(devices)]
        # payload()'s reading with its seq and ts as %-slots: one bytes format a reading
        self.templates = [
            b'{"device": "d%04d", "seq": %%d, "ts": "%%s", "values": %s}'
            % (i, json.dumps(dict([METRIC[KINDS[i % len(KINDS)]]])).encode())
            for i in range(devices)
        ]

    def run(
        self, rate: float, seconds: float, stop: EventLike | None = None, tick: float = 0.01
    ) -> float:
        """Offer ``rate`` readings/s for ``seconds``, a batch every ``tick`` seconds; return
        the rate actually offered."""
        began = time.perf_counter()
        per_tick = max(1, int(rate * tick))
        sent = 0
        packet = self.publisher.packet
        while time.perf_counter() - began < seconds and not (stop and stop.is_set()):
            ts = datetime.now(UTC).isoformat().encode()  # one time stamp a tick (10 ms)
            batch = []
            for _ in range(per_tick):
                i = self.sent % self.devices
                self.seq[i] += 1
                batch.append(packet(self.topics[i], self.templates[i] % (self.seq[i], ts)))
                self.sent += 1
            self.publisher.send(batch)
            sent += per_tick
            ahead = began + sent / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        return sent / (time.perf_counter() - began)

    def close(self) -> None:
        self.publisher.close()


def background_load(
    port: int, devices: int, rate: float, stop: EventLike, tick: float = BACKGROUND_TICK_S
) -> None:
    load = Load(port, devices)
    try:
        load.run(rate, 3600.0, stop, tick)
    finally:
        load.close()


def probe_latencies(port: int, samples: int, budget_s: float = 90.0) -> tuple[list[float], int]:
    """Publish the probe high then low; time each reading to its alert event (for at most
    ``budget_s``: an agent that cannot keep up would make each sample wait its 5 s out).
    Returns the latencies and how many samples got no alert within 5 s."""
    alert_topic = topics.gateway_topic(topics.Channel.ALERT, SITE, GATEWAY)
    # (raised?, when it reached the callback) of each probe alert: a late one of a sample
    # that timed out is told from the next sample's by its direction, and dropped.
    arrivals: queue.Queue[tuple[bool, float]] = queue.Queue()
    ack_topic = topics.gateway_topic(topics.Channel.ACK, SITE, GATEWAY)

    def on_message(c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        received = time.perf_counter()  # before the ack's work, which is the probe's own
        # The hub's part: acknowledge every alert, so the agent's outbox drains as it would
        # with a hub (without acks it would replay its whole backlog beside the probe's).
        event = json.loads(m.payload)
        ack = {"v": 1, "ids": [event["id"]], "ts": datetime.now(UTC).isoformat()}
        c.publish(ack_topic, json.dumps(ack).encode(), qos=1)
        if event.get("device") == PROBE:
            # The agent's event has a phase; the plain agent's says whether it is on.
            arrivals.put((bool(event.get("on", event.get("phase") == "raised")), received))

    client = paho_client("bench-probe")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(alert_topic, qos=1)
    client.loop_start()
    time.sleep(0.3)
    out: list[float] = []
    missed = 0
    seq = 1_000_000
    began_all = time.perf_counter()
    for i in range(samples * 2):
        if time.perf_counter() - began_all > budget_s:
            break
        seq += 1
        high = i % 2 == 0
        began = time.perf_counter()
        client.publish(
            topics.reading(SITE, GATEWAY, PROBE),
            payload(PROBE, seq, "gas_lel", 80.0 if high else 1.0),
            qos=1,
        )
        while True:
            try:
                raised, at = arrivals.get(timeout=max(0.0, began + 5 - time.perf_counter()))
            except queue.Empty:
                missed += 1
                break
            if raised == high and at >= began:
                out.append((at - began) * 1000)
                break
    client.loop_stop()
    client.disconnect()
    return out, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="5000,10000,20000,40000,50000,60000,80000")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--background", type=float, default=5000.0, help="readings/s")
    parser.add_argument(
        "--tick-ms",
        type=float,
        default=BACKGROUND_TICK_S * 1000,
        help="the background load's batches: one every this many ms",
    )
    parser.add_argument("--bare-count", type=int, default=200_000, help="baseline messages")
    parser.add_argument("--parts", type=int, default=1, help="the agent's processes (parts:)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    tick = args.tick_ms / 1000
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(persistence=False) as broker:
        port = broker.port
        baseline = bare_subscriber_rate(port, args.bare_count)
        print(f"bare paho subscriber on this broker: {baseline:,.0f} msgs/s")
        commits = sorted(durable_commits(Path(tmp) / "data", max(args.samples, 100)))
        print(
            "durable commit of an alert on this disk (SQLite WAL, synchronous=FULL):"
            f" p50 {statistics.median(commits):.2f} ms,"
            f" p99 {commits[math.ceil(len(commits) * 0.99) - 1]:.2f} ms ({len(commits)} commits)"
        )

        handled = multiprocessing.Value("q", 0, lock=False)
        stop = multiprocessing.Event()
        plain = multiprocessing.Process(target=plain_agent, args=(port, handled, stop))
        plain.start()
        time.sleep(0.5)  # a benchmark, not a test: let it subscribe
        plain_best = measure(
            "plain paho agent", port, rates, args.seconds, args.devices, lambda: handled.value
        )
        plain_p99 = latency(
            "plain paho agent", port, args.devices, args.background, args.samples, tick
        )
        stop.set()
        plain.join(timeout=30)

        metrics_port = free_port()
        path = Path(tmp) / "edge.yaml"
        path.write_text(config(port, Path(tmp) / "data", metrics_port, args.devices, args.parts))
        agent = subprocess.Popen(
            [sys.executable, "-m", "anmin", "edge", "run", "--config", str(path)],
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    processed(metrics_port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            print(
                f"agent ({args.parts} part(s)) at start ({args.devices} devices, every preset):"
                f" {_memory(agent.pid)}"
            )
            best = measure(
                "edge agent",
                port,
                rates,
                args.seconds,
                args.devices,
                lambda: processed(metrics_port),
            )
            p99 = latency("edge agent", port, args.devices, args.background, args.samples, tick)
            if args.parts > 1:
                time.sleep(1.0)  # the other parts' last figures reach part 0's board
            # The agent's own share, from its /metrics: reading read -> event written, and of
            # that the wait for the durable commit (alarms sent by their own task).
            for what, name in (
                ("reading read -> alert written", "anmin_edge_alarm_seconds"),
                ("of which the durable commit", "anmin_edge_alarm_commit_seconds"),
            ):
                if (q := histogram_quantiles(metrics_port, name)) is not None:
                    print(
                        f"edge agent, inside ({name}): {what}: p50 <= {q[0]:g} ms,"
                        f" p99 <= {q[1]:g} ms ({q[2]} alarms; bucket bounds)"
                    )
            print(f"agent after the run: {_memory(agent.pid)}")
        finally:
            agent.terminate()
            agent.wait(timeout=30)
        print(f"plain paho agent: sustained {plain_best:,.0f} readings/s, p99 {plain_p99:.2f} ms")
        print(
            f"sustained: {best:,.0f} readings/s; ratio to bare paho: {best / baseline:.2f};"
            f" to the plain paho agent: {best / plain_best:.2f}"
        )
        print(
            f"p99 at {args.background:,.0f}/s: {p99:.2f} ms; ratio to the plain paho agent's:"
            f" {p99 / plain_p99:.2f}"
        )


if __name__ == "__main__":
    main()
